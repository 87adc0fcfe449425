/**
 * `pagedisk volume attach|update|list|show` and `pagedisk pool list` on
 * volumes with several replicas, as users run them: the built binary
 * against the local control plane over Azurite. The writer is played by
 * reports through the API, as its agent sends them when a replica changes.
 * No node beats after joining, and none goes SUSPECT for it: the test's
 * policy gives a silent node an hour before SUSPECT, and once no node has
 * beaten for three heartbeat intervals (6 s) the sweeper judges nobody at
 * all (the heartbeats' path looks down to it). The
 * sweeper is not on a timer here but run by the test, one pass where the
 * story needs one, so every step is a known state and nothing waits on
 * time.
 *
 * The tests build on each other, in order: placement on attach, a raised
 * replica count rebuilt, a replica lost and resynced, then a pool released
 * under it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Attachment } from "../../contract/attachment.ts";
import type { JoinResponse, ReplicaReport } from "../../contract/node.ts";
import { Pool } from "../../contract/pool.ts";
import type { IssuedToken } from "../../contract/token.ts";
import { type Replica, Volume } from "../../contract/volume.ts";
import { DEFAULT_REPAIR_POLICY } from "../../functions/health/repair-policy.ts";
import { DEFAULT_SWEEP_POLICY, type SweepPolicy, sweep } from "../../functions/health/sweep.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type CliResult, pagedisk, rows } from "./cli.ts";

let azurite: Azurite;
let local: LocalControlPlane;
let scratch: string;
/** Node credentials by node name, for reports. */
const credentials = new Map<string, string>();
/** Where volume `db` is attached: the writer the test plays. */
let writer: { node: string; epoch: number };

/**
 * Nodes never go SUSPECT between two passes; a failure report does not keep
 * a pool SUSPECT, so an OFFLINE replica is resynced on the next pass.
 */
const POLICY: SweepPolicy = {
  ...DEFAULT_SWEEP_POLICY,
  suspectAfterMs: 3_600_000,
  lostAfterMs: 7_200_000,
  repair: { ...DEFAULT_REPAIR_POLICY, suspectWindowMs: 0 },
};
const pass = () => sweep(local.runtime.cp, POLICY);

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  scratch = await mkdtemp(join(tmpdir(), "pagedisk-replicas-"));
  local = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir: join(scratch, "state"),
    // Passes are the test's own (`pass()`).
    sweepIntervalMs: 3_600_000,
    log: () => {},
  });
  for (const pool of ["p1", "p2", "p3"]) {
    const r = await cli(
      "pool",
      "add",
      pool,
      "--connection-string",
      azurite.connectionString,
      "--container",
      `${pool}-disks`,
    );
    expect(r.stderr).toBe("");
  }
  const token = await api<IssuedToken>("POST", "/tokens", {});
  for (const node of ["vm-a", "vm-b"]) {
    const joined = await api<JoinResponse>("POST", "/nodes/join", { name: node }, token.token);
    credentials.set(node, joined.credential);
  }
});
afterAll(async () => {
  await local?.close();
  await azurite?.dispose();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

function cli(...args: string[]): Promise<CliResult> {
  return pagedisk(args, {
    cwd: scratch,
    env: { PAGEDISK_API_URL: local.apiUrl, PAGEDISK_API_KEY: local.adminKey },
  });
}

/** Run, expect success with nothing on stderr, return stdout. */
async function ok(...args: string[]): Promise<string> {
  const r = await cli(...args);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
  return r.stdout;
}

/** A request as any API client makes it; `bearer` defaults to the admin key. */
async function api<T>(method: string, path: string, body?: unknown, bearer = local.adminKey) {
  const res = await fetch(`${local.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

const volume = async (name: string) => Volume.parse(await api("GET", `/volumes/${name}`));

/**
 * One report of db's writer: every replica it was given (all but
 * CREATING and RETIRING ones) ONLINE, except those `reports` says otherwise.
 */
async function report(reports: Record<string, Omit<ReplicaReport, "id">> = {}): Promise<void> {
  const v = await volume("db");
  const replicas = v.status.replicas
    .filter((r) => r.state !== "CREATING" && r.state !== "RETIRING")
    .map((r) => ({ id: r.id, ...(reports[r.id] ?? { state: "ONLINE" as const }) }));
  await api(
    "POST",
    `/nodes/${writer.node}/report`,
    { volumes: [{ volume: "db", epoch: writer.epoch, state: "SERVING", replicas }] },
    credentials.get(writer.node),
  );
}

/** The `volume list` row of `name`, as cells. */
async function listed(name: string): Promise<string[] | undefined> {
  const table = rows(await ok("volume", "list"));
  expect(table[0]).toEqual([
    "NAME",
    "SIZE",
    "REPLICAS",
    "STATE",
    "NODE",
    "EPOCH",
    "FAILOVER",
    "CREATED",
  ]);
  return table.find((r) => r[0] === name);
}

/** The replica table of `volume show db`, as rows of cells, header first. */
async function replicaTable(): Promise<{ replicas: string; table: string[][] }> {
  const out = await ok("volume", "show", "db");
  const [fields, table] = out.split("\n\n");
  const replicas = /^replicas: +(.*)$/m.exec(fields!)?.[1] ?? "";
  return { replicas, table: rows(table!) };
}

/** The `pool list` row of `name`, as cells. */
async function poolRow(name: string): Promise<string[] | undefined> {
  const table = rows(await ok("pool", "list"));
  expect(table[0]).toEqual([
    "NAME",
    "ACCOUNT",
    "CONTAINER",
    "HEALTH",
    "USAGE",
    "RELEASE",
    "CREATED",
  ]);
  return table.find((r) => r[0] === name);
}

const newest = (v: Volume): Replica => v.status.replicas.at(-1)!;
const SINCE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

describe("pagedisk volume attach without --node", () => {
  it("attaches to a preferred node before a less loaded one, and says the control plane chose", async () => {
    await ok("volume", "create", "db", "--size", "1MiB", "--pool", "p1,p2,p3");
    // The others on p3, so that the pool released at the end holds db's replica only.
    for (const [name, required] of [
      ["web", "vm-a,vm-b"],
      ["spare", "vm-a,vm-b"],
      ["pinned", "vm-z"],
    ] as const) {
      const placement = ["--pool", "p3", "--required-node", required];
      await ok("volume", "create", name, "--size", "1MiB", ...placement);
    }
    await ok("volume", "attach", "web", "--node", "vm-a");
    await ok("volume", "update", "db", "--preferred-node", "vm-a");

    const db = await cli("volume", "attach", "db");
    expect(db).toEqual({
      code: 0,
      stdout: "volume db attached to node vm-a (epoch 1, chosen by the control plane)\n",
      stderr: "",
    });
    const { status } = await volume("db");
    expect(status).toMatchObject({ state: "ATTACHED", ownerNode: "vm-a", epoch: 1 });
    writer = { node: "vm-a", epoch: status.epoch };
  });

  it("places a volume with no preference on the least loaded node, and --json gives the attachment", async () => {
    const r = await cli("volume", "attach", "spare", "--json");
    expect(r.code).toBe(0);
    // vm-a serves two volumes already: vm-b, though vm-a comes first by name.
    expect(Attachment.parse(JSON.parse(r.stdout))).toMatchObject({ volume: "spare", node: "vm-b" });
  });

  it("refuses when no required node can take it (exit 1), leaving it detached", async () => {
    const r = await cli("volume", "attach", "pinned");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^pagedisk: NoEligibleNode: .*vm-z/);
    expect((await volume("pinned")).status).toMatchObject({ state: "DETACHED", ownerNode: null });
  });
});

describe("pagedisk volume update --replicas", () => {
  it("raises the count; the new replica is rebuilt, its progress shown in list and show", async () => {
    const update = await ok("volume", "update", "db", "--replicas", "2");
    expect(update).toMatch(/^replicas: +1 of 2 ONLINE \(degraded\)$/m);
    expect((await volume("db")).spec.replicas).toBe(2);

    await pass();
    const made = newest(await volume("db"));
    expect(made.state).toBe("REBUILDING");
    expect(await listed("db")).toEqual(expect.arrayContaining(["1/2 (rebuilding 0%)"]));

    await report({ [made.id]: { state: "REBUILDING", progress: 40.7 } });
    await pass();
    expect((await listed("db"))?.slice(0, 4)).toEqual([
      "db",
      "1 MiB",
      "1/2 (rebuilding 40%)",
      "ATTACHED",
    ]);
    const { replicas, table } = await replicaTable();
    expect(replicas).toBe("1 of 2 ONLINE (degraded: rebuilding 40%)");
    expect(table[0]).toEqual([
      "REPLICA",
      "POOL",
      "STATE",
      "SINCE",
      "PROGRESS",
      "REPLACES",
      "MESSAGE",
    ]);
    const row = table.find((r) => r[0] === made.id);
    expect(row?.slice(1, 6)).toEqual([
      made.pool,
      "REBUILDING",
      expect.stringMatching(SINCE),
      "40%",
      "-",
    ]);
    const first = table.find((r) => r[0] !== made.id && r[0] !== "REPLICA");
    expect(first?.slice(2, 6)).toEqual(["ONLINE", expect.stringMatching(SINCE), "-", "-"]);
  });

  it("shows 2/2 once the writer reports the copy done", async () => {
    await report();
    await pass();
    expect((await listed("db"))?.[2]).toBe("2/2");
    const { replicas, table } = await replicaTable();
    expect(replicas).toBe("2 of 2 ONLINE");
    expect(table.slice(1).map((r) => r[2])).toEqual(["ONLINE", "ONLINE"]);
  });

  it("refuses a count its pools cannot hold or the API does not allow (exit 1), and a non-number (exit 2), changing nothing", async () => {
    const [db, web] = [await volume("db"), await volume("web")];
    // web may use p3 only, which holds its one replica already.
    const cramped = await cli("volume", "update", "web", "--replicas", "2");
    expect(cramped.code).toBe(1);
    expect(cramped.stderr).toMatch(/^pagedisk: InsufficientPools: /);
    const tooMany = await cli("volume", "update", "db", "--replicas", "4");
    expect(tooMany.code).toBe(1);
    expect(tooMany.stderr).toMatch(/^pagedisk: InvalidRequest: .*replicas/);
    const word = await cli("volume", "update", "db", "--replicas", "two");
    expect(word.code).toBe(2);
    expect(word.stderr).toMatch(/^pagedisk: usage: .*"two" is not a whole number/);
    expect([await volume("db"), await volume("web")]).toEqual([db, web]);
  });
});

describe("pagedisk volume show on a degraded volume", () => {
  it("says degraded and why when the writer takes a replica offline", async () => {
    const lost = newest(await volume("db"));
    await report({ [lost.id]: { state: "OFFLINE", error: "connect ECONNREFUSED" } });
    await pass();
    expect((await listed("db"))?.[2]).toBe("1/2 (degraded)");
    const { replicas, table } = await replicaTable();
    expect(replicas).toBe("1 of 2 ONLINE (degraded)");
    const row = table.find((r) => r[0] === lost.id);
    expect(row?.slice(2, 7)).toEqual([
      "OFFLINE",
      expect.stringMatching(SINCE),
      "-",
      "-",
      "connect ECONNREFUSED",
    ]);
  });

  it("shows the resync and its progress once the pool answers, then 2/2", async () => {
    const lost = newest(await volume("db"));
    await pass();
    expect(newest(await volume("db"))).toMatchObject({ id: lost.id, state: "RESYNCING" });
    await report({ [lost.id]: { state: "RESYNCING", progress: 40 } });
    await pass();
    expect((await listed("db"))?.[2]).toBe("1/2 (resyncing 40%)");
    const { replicas, table } = await replicaTable();
    expect(replicas).toBe("1 of 2 ONLINE (degraded: resyncing 40%)");
    expect(table.find((r) => r[0] === lost.id)?.slice(2, 6)).toEqual([
      "RESYNCING",
      expect.stringMatching(SINCE),
      "40%",
      "-",
    ]);

    await report();
    await pass();
    expect((await listed("db"))?.[2]).toBe("2/2");
  });
});

describe("pagedisk pool list during a release", () => {
  it("shows health, usage and release progress; volume show names the replica replaced", async () => {
    const before = await volume("db");
    const moving = newest(before);
    const free = ["p1", "p2", "p3"].find((p) => !before.status.replicas.some((r) => r.pool === p));
    await pass();
    expect(await poolRow(moving.pool)).toEqual(
      expect.arrayContaining([moving.pool, "GOOD", "IN_USE", "-"]),
    );

    const released = Pool.parse(JSON.parse(await ok("pool", "release", moving.pool, "--json")));
    expect(released.usage).toBe("RELEASING");
    await pass();
    const replacement = newest(await volume("db"));
    expect(replacement).toMatchObject({ pool: free, state: "REBUILDING", replaces: moving.id });
    expect((await poolRow(moving.pool))?.slice(3, 6)).toEqual([
      "GOOD",
      "RELEASING",
      "0% (0 of 1 moved)",
    ]);

    await report({ [replacement.id]: { state: "REBUILDING", progress: 50 } });
    await pass();
    expect((await poolRow(moving.pool))?.slice(4, 6)).toEqual(["RELEASING", "50% (0 of 1 moved)"]);
    // Both old replicas still hold every write: not degraded, but a copy is under way.
    expect((await listed("db"))?.[2]).toBe("2/2 (rebuilding 50%)");
    const { table } = await replicaTable();
    expect(table.find((r) => r[0] === replacement.id)?.slice(1, 6)).toEqual([
      free,
      "REBUILDING",
      expect.stringMatching(SINCE),
      "50%",
      moving.id,
    ]);

    await report();
    // The replacement goes ONLINE, the old one RETIRING; it is dropped, and the pool released.
    await pass();
    await pass();
    await pass();
    const after = await volume("db");
    expect(after.status.replicas.map((r) => r.pool).sort()).not.toContain(moving.pool);
    expect((await poolRow(moving.pool))?.slice(4, 6)).toEqual(["RELEASED", "-"]);
    expect((await listed("db"))?.[2]).toBe("2/2");
  });
});
