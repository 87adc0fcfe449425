/**
 * `pagedisk pool|volume|node|token|events` as users run them: the built
 * binary against the local control plane over Azurite, asserting on what
 * it prints and how it exits. The tests build on each other's state, in
 * order: a pool, a volume on it, a node that joins, attach and detach, then
 * the events all of that left.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventPage } from "../../contract/event.ts";
import { IssuedToken, JoinTokenList } from "../../contract/token.ts";
import { Volume, VolumeList } from "../../contract/volume.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type CliResult, pagedisk, rows } from "./cli.ts";

let azurite: Azurite;
let local: LocalControlPlane;
let scratch: string;
/** The join token the attach test creates; revoked at the end. */
let tokenId = "";

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  scratch = await mkdtemp(join(tmpdir(), "pagedisk-manage-"));
  local = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir: join(scratch, "state"),
    // No sweep during the file: a joined node must stay READY without heartbeats.
    sweepIntervalMs: 3_600_000,
    log: () => {},
  });
});
afterAll(async () => {
  await local?.close();
  await azurite?.dispose();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** The CLI from a directory without `.pagedisk/`, configured by the environment. */
function cli(...args: string[]): Promise<CliResult> {
  return pagedisk(args, {
    cwd: scratch,
    env: { PAGEDISK_API_URL: local.apiUrl, PAGEDISK_API_KEY: local.adminKey },
  });
}

/** Run, expect success, parse `--json` output. */
async function json(...args: string[]): Promise<unknown> {
  const r = await cli(...args, "--json");
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

const NO_STACK = /\n\s+at /;
const GiB = 1024 ** 3;

describe("pagedisk pool", () => {
  it("adds the Azurite account as a pool and lists it, secrets masked", async () => {
    const add = await cli(
      "pool",
      "add",
      "local",
      "--connection-string",
      azurite.connectionString,
      "--container",
      "disks",
    );
    expect(add.code).toBe(0);
    expect(add.stdout).toBe(
      `pool local registered: account ${azurite.accountName}, container disks\n`,
    );

    const list = await cli("pool", "list");
    expect(list.code).toBe(0);
    const [header, row] = rows(list.stdout);
    expect(header).toEqual([
      "NAME",
      "ACCOUNT",
      "CONTAINER",
      "HEALTH",
      "USAGE",
      "RELEASE",
      "CREATED",
    ]);
    // Never probed (no sweep in this file), never released.
    expect(row?.slice(0, 6)).toEqual([
      "local",
      azurite.accountName,
      "disks",
      "UNKNOWN",
      "IN_USE",
      "-",
    ]);

    const show = await cli("pool", "show", "local");
    expect(show.stdout).toMatch(/^container: +disks$/m);
    expect(show.stdout).not.toContain(azurite.accountKey);
    expect(show.stdout).toMatch(/^health: +UNKNOWN\nhealth since: +-\nhealth reason: +-$/m);
  });
});

describe("pagedisk volume", () => {
  it("creates a volume from a human size and lists and shows it as 8 GiB", async () => {
    const create = await cli(
      "volume",
      "create",
      "db",
      "--size",
      "8GiB",
      "--pool",
      "local",
      "--failover",
      "manual",
    );
    expect(create.stderr).toBe("");
    expect(create.stdout).toBe("volume db created: 8 GiB on local\n");

    const list = await cli("volume", "list");
    const lines = list.stdout.trimEnd().split("\n");
    expect(rows(list.stdout)[1]?.slice(0, 7)).toEqual([
      "db",
      "8 GiB",
      "1/1",
      "DETACHED",
      "-",
      "0",
      "manual",
    ]);
    // Aligned: each column starts at the same offset in the header and the row.
    expect(lines[1]!.indexOf("8 GiB")).toBe(lines[0]!.indexOf("SIZE"));
    expect(lines[1]!.indexOf("DETACHED")).toBe(lines[0]!.indexOf("STATE"));

    const show = await cli("volume", "show", "db");
    expect(show.stdout).toMatch(/^size: +8 GiB \(8589934592 bytes\)$/m);
    expect(show.stdout).toMatch(/^failover: +manual$/m);
    expect(show.stdout).toMatch(/^replicas: +1 of 1 ONLINE$/m);
  });

  it("prints the API's JSON with --json, which parses as the contract's Volume", async () => {
    const v = Volume.parse(await json("volume", "show", "db"));
    expect(v.spec).toEqual({
      sizeBytes: 8 * GiB,
      replicas: 1,
      pools: ["local"],
      requiredNodes: [],
      preferredNodes: [],
      failover: "manual",
    });
    expect(v.status.replicas.map((r) => r.pool)).toEqual(["local"]);
    const list = VolumeList.parse(await json("volume", "list"));
    expect(list.items.map((x) => x.name)).toEqual(["db"]);
  });

  it("attaches to a node that joined with a CLI-made token, then detaches", async () => {
    const issued = IssuedToken.parse(await json("token", "create", "--expires", "2h"));
    expect(Date.parse(issued.expiresAt) - Date.parse(issued.createdAt)).toBe(2 * 3_600_000);
    const tokens = JoinTokenList.parse(await json("token", "list"));
    expect(tokens.items.map((t) => t.id)).toContain(issued.id);
    expect(JSON.stringify(tokens)).not.toContain(issued.token);
    tokenId = issued.id;

    // As the agent joins: a direct call with the join token.
    const joined = await fetch(`${local.apiUrl}/nodes/join`, {
      method: "POST",
      headers: { authorization: `Bearer ${issued.token}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "vm-1", agentVersion: "0.1.0" }),
    });
    expect(joined.status).toBe(201);
    const nodes = rows((await cli("node", "list")).stdout);
    expect(nodes[1]?.slice(0, 5)).toEqual(["vm-1", "READY", "no", "0", "0.1.0"]);

    const attach = await cli("volume", "attach", "db", "--node", "vm-1");
    expect(attach.stderr).toBe("");
    expect(attach.stdout).toBe("volume db attached to node vm-1 (epoch 1)\n");
    const attached = Volume.parse(await json("volume", "show", "db"));
    expect(attached.status).toMatchObject({ state: "ATTACHED", ownerNode: "vm-1", epoch: 1 });

    const detach = await cli("volume", "detach", "db");
    expect(detach.stdout).toBe("volume db detached (DETACHED)\n");
    const detached = Volume.parse(await json("volume", "show", "db"));
    expect(detached.status).toMatchObject({ state: "DETACHED", ownerNode: null });

    // --force: the leases go without waiting for the node's drain, and the event says so.
    expect((await cli("volume", "attach", "db", "--node", "vm-1")).stderr).toBe("");
    const forced = await cli("volume", "detach", "db", "--force");
    expect(forced.stdout).toBe("volume db detached (DETACHED)\n");
    // Newest first: the forced detach, then the first one.
    const page = EventPage.parse(await json("events", "--volume", "db", "--type", "volume-detached"));
    expect(page.items).toHaveLength(2);
    expect(page.items[0]!.data).toMatchObject({ drained: false, reason: "force=true" });
  });

  it("updates placement rules, and refuses an update that changes nothing (exit 2)", async () => {
    const updated = Volume.parse(
      await json(
        "volume",
        "update",
        "db",
        "--preferred-node",
        "vm-1,vm-2",
        "--failover",
        "automatic",
      ),
    );
    expect(updated.spec).toMatchObject({ preferredNodes: ["vm-1", "vm-2"], failover: "automatic" });

    const empty = await cli("volume", "update", "db");
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/^pagedisk: usage: nothing to change/);
  });

  it("reports an API refusal as `pagedisk: <code>: <message>`, exit 1, no stack", async () => {
    const r = await cli("volume", "create", "lost", "--size", "1GiB", "--pool", "nowhere");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^pagedisk: PoolNotFound: .*nowhere/);
    expect(r.stderr).not.toMatch(NO_STACK);

    const busy = await cli("pool", "remove", "local");
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/^pagedisk: PoolInUse: /);
  });

  it("refuses a bad size as a usage error, exit 2, and sends nothing", async () => {
    const before = VolumeList.parse(await json("volume", "list"));
    const r = await cli("volume", "create", "odd", "--size", "1000", "--pool", "local");
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^pagedisk: usage: .*multiple of 512 bytes/);
    expect(r.stderr).not.toMatch(NO_STACK);
    expect(VolumeList.parse(await json("volume", "list"))).toEqual(before);
  });
});

describe("pagedisk events", () => {
  it("lists what happened newest first, in a table and as the API's page", async () => {
    const page = EventPage.parse(await json("events"));
    const times = page.items.map((e) => Date.parse(e.at));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    const types = page.items.map((e) => e.type);
    const order = [
      "volume-updated",
      "volume-detached",
      "volume-attached",
      "node-joined",
      "token-created",
      "volume-created",
      "pool-registered",
    ];
    const at = order.map((t) => types.indexOf(t));
    expect(at).not.toContain(-1);
    expect(at).toEqual([...at].sort((a, b) => a - b));

    const table = rows((await cli("events")).stdout);
    expect(table[0]).toEqual(["TIME", "TYPE", "VOLUME", "NODE", "MESSAGE"]);
    expect(table[1]?.[1]).toBe(page.items[0]!.type);
  });

  it("follows continuations with --all; a single short page says there is more", async () => {
    const one = await cli("events", "--volume", "db", "--limit", "1");
    expect(rows(one.stdout)).toHaveLength(2);
    expect(one.stderr).toMatch(/more events/);

    const whole = EventPage.parse(await json("events", "--volume", "db"));
    const paged = EventPage.parse(await json("events", "--volume", "db", "--limit", "1", "--all"));
    expect(whole.items.length).toBeGreaterThanOrEqual(4);
    expect(paged).toEqual({ items: whole.items, continuation: null });
  });
});

describe("pagedisk cleanup commands", () => {
  it("cordons and uncordons a node, then deletes, removes and revokes everything", async () => {
    expect((await cli("node", "cordon", "vm-1")).stdout).toBe("node vm-1 cordoned\n");
    expect(rows((await cli("node", "list")).stdout)[1]?.[2]).toBe("yes");
    expect((await cli("node", "uncordon", "vm-1")).stdout).toBe("node vm-1 uncordoned\n");
    expect(rows((await cli("node", "list")).stdout)[1]?.[2]).toBe("no");

    const steps: Array<[string[], string]> = [
      [["volume", "delete", "db"], "volume db deleted\n"],
      [["pool", "remove", "local"], "pool local removed\n"],
      [["node", "remove", "vm-1"], "node vm-1 removed\n"],
      [["token", "revoke", tokenId], `join token ${tokenId} revoked\n`],
    ];
    for (const [args, said] of steps) {
      const r = await cli(...args);
      expect({ args, code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({
        args,
        code: 0,
        stdout: said,
        stderr: "",
      });
    }
    for (const [what, empty] of [
      ["volume", "no volumes"],
      ["pool", "no pools"],
      ["node", "no nodes"],
      ["token", "no join tokens"],
    ]) {
      expect((await cli(what!, "list")).stdout).toBe(`${empty}\n`);
    }
    const again = await cli("token", "revoke", tokenId);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^pagedisk: TokenNotFound: /);
  });
});

describe("pagedisk without a configured API", () => {
  it("says how to configure one, exit 2", async () => {
    const r = await pagedisk(["volume", "list"], { cwd: scratch });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      /^pagedisk: config: no control plane configured: set PAGEDISK_API_URL/,
    );
    expect(r.stderr).not.toMatch(NO_STACK);
  });

  it("finds .pagedisk/local.json in a parent directory", async () => {
    const project = join(scratch, "project");
    await mkdir(join(project, ".pagedisk"), { recursive: true });
    await mkdir(join(project, "deep", "er"), { recursive: true });
    await writeFile(
      join(project, ".pagedisk", "local.json"),
      JSON.stringify({ apiUrl: local.apiUrl, adminKey: local.adminKey }),
    );
    // The events of this very control plane prove which API answered.
    const r = await pagedisk(["events", "--type", "pool-removed"], {
      cwd: join(project, "deep", "er"),
    });
    expect(r.code).toBe(0);
    expect(rows(r.stdout)[1]?.slice(1, 3)).toEqual(["pool-removed", "-"]);
    expect(r.stdout).toContain("local");
  });

  it("reports a wrong key and an unreachable API with exit 1", async () => {
    const wrong = await cli("pool", "list", "--api-key", "not-a-key");
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^pagedisk: Unauthorized: /);

    const away = await cli("pool", "list", "--api-url", "http://127.0.0.1:1/api/v1");
    expect(away.code).toBe(1);
    expect(away.stderr).toMatch(
      /^pagedisk: Unreachable: cannot reach http:\/\/127\.0\.0\.1:1\/api\/v1\/pools/,
    );
  });
});
