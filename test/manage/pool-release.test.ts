/**
 * `pagedisk pool release|annotate|show` as users run them: the built
 * binary against the local control plane over Azurite, its sweeper
 * running. The writer of the volume being moved is played by reports
 * through the API and beats to its liveness row, as its agent sends them
 * (so that the running sweeper sees it alive); `release --watch` is
 * followed line by line as it prints, and each step of the test waits on a
 * line.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { beat } from "../../agent/control/liveness-beat.ts";
import type { DesiredState, JoinResponse } from "../../contract/node.ts";
import { Pool } from "../../contract/pool.ts";
import type { IssuedToken } from "../../contract/token.ts";
import type { Volume } from "../../contract/volume.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { BIN } from "../harness/serve.ts";
import { type CliResult, pagedisk, rows } from "./cli.ts";

let azurite: Azurite;
let local: LocalControlPlane;
let scratch: string;

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  scratch = await mkdtemp(join(tmpdir(), "pagedisk-pool-release-"));
  local = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir: join(scratch, "state"),
    // The sweeper moves replicas and advances releases while the CLI watches.
    sweepIntervalMs: 200,
    log: () => {},
  });
});
afterAll(async () => {
  await local?.close();
  await azurite?.dispose();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const env = () => ({ PAGEDISK_API_URL: local.apiUrl, PAGEDISK_API_KEY: local.adminKey });
const cli = (...args: string[]): Promise<CliResult> => pagedisk(args, { cwd: scratch, env: env() });

/** An admin request, as any API client makes it. */
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

async function addPool(name: string): Promise<void> {
  const r = await cli(
    "pool",
    "add",
    name,
    "--connection-string",
    azurite.connectionString,
    "--container",
    `${name}-disks`,
  );
  expect(r.stderr).toBe("");
}

describe("pagedisk pool annotate", () => {
  it("sets and removes annotations, and says what it did", async () => {
    await addPool("tagged");
    const set = await cli("pool", "annotate", "tagged", "removal=ready", "health=suspect");
    expect(set).toEqual({
      code: 0,
      stdout: "pool tagged annotated: removal=ready,health=suspect; usage IN_USE\n",
      stderr: "",
    });
    const removed = await cli("pool", "annotate", "tagged", "health-");
    expect(removed.stdout).toBe("pool tagged annotated: removal=ready; usage IN_USE\n");
    const shown = await cli("pool", "show", "tagged");
    expect(shown.stdout).toMatch(/^annotations: +removal=ready$/m);
  });

  it("refuses a wrong command line before sending anything (exit 2), and passes on the API's refusal (exit 1)", async () => {
    for (const args of [[], ["color=red"], ["action-"], ["health=bad", "health-"]]) {
      const r = await cli("pool", "annotate", "tagged", ...args);
      expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 2, stdout: "" });
      expect(r.stderr).toMatch(/^pagedisk: usage: /);
    }
    const refused = await cli("pool", "annotate", "tagged", "removal=now");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^pagedisk: InvalidRequest: body\.removal: /);
    const missing = await cli("pool", "annotate", "nowhere", "removal=ready");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^pagedisk: PoolNotFound: /);
    expect(Pool.parse(JSON.parse((await cli("pool", "show", "tagged", "--json")).stdout)))
      .toMatchObject({ annotations: { removal: "ready" }, usage: "IN_USE" });
  });
});

describe("pagedisk pool release", () => {
  it("releases an empty pool at once; with removal=ready it is removed", async () => {
    await addPool("spare");
    const r = await cli("pool", "release", "spare");
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe("pool spare: 100% RELEASED: released: 0 of 0 replica(s) moved");
    expect(r.stdout).toMatch(/^no replicas on this pool$/m);

    const gone = await cli("pool", "annotate", "spare", "removal=ready", "--json");
    expect(Pool.parse(JSON.parse(gone.stdout)).usage).toBe("REMOVED");
    expect((await cli("pool", "show", "spare")).stderr).toMatch(/^pagedisk: PoolNotFound: /);
  });

  it("--watch on a terminal redraws one progress bar line", async () => {
    await addPool("tty");
    // script(1) gives the command a pseudo-terminal, as a person's shell would.
    const command = [process.execPath, BIN, "pool", "release", "tty", "--watch"]
      .map((word) => `'${word}'`)
      .join(" ");
    const r = await new Promise<CliResult>((done) => {
      execFile(
        "script",
        ["-qec", command, "/dev/null"],
        { cwd: scratch, env: { PATH: process.env.PATH ?? "", ...env() } },
        (err, stdout, stderr) =>
          done({ code: err ? Number(err.code) : 0, stdout, stderr }),
      );
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      `\r\u001b[2K[${"#".repeat(30)}] 100% RELEASED: released: 0 of 0 replica(s) moved\r\n`,
    );
  });

  it("--watch ends with exit 1 and the release table when a replica cannot move", async () => {
    await addPool("only");
    await api("POST", "/volumes", { name: "stuck", sizeBytes: 1024 * 1024, pools: ["only"] });
    const r = await cli("pool", "release", "only", "--watch", "--interval", "0.1");
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("pagedisk: release of pool only ended FAILED\n");
    const table = rows(r.stdout.slice(r.stdout.indexOf("VOLUME")));
    expect(table[0]).toEqual(["VOLUME", "REPLICA", "STATUS", "PROGRESS", "MESSAGE"]);
    expect(table[1]?.slice(0, 4)).toEqual([
      "stuck",
      expect.stringMatching(/^[0-9a-f]{12}$/),
      "FAILED",
      "0%",
    ]);
    expect(table[1]?.[4]).toMatch(/^no pool can take it: /);
    const show = await cli("pool", "show", "only");
    expect(show.stdout).toMatch(/^usage: +FAILED$/m);
    expect(show.stdout).toMatch(/^stuck +[0-9a-f]{12} +FAILED +0% +no pool can take it: /m);
    expect(show.stdout).toMatch(/^release: +0% FAILED: release failed: 0 of 1 replica\(s\) moved, 1 cannot be moved$/m);
    await api("DELETE", "/volumes/stuck");
  });

  it("--watch follows a move line by line as the writer copies, and exits 0 once RELEASED", async () => {
    // Pools of equal health and load are chosen by name: "old" before "spare", whether or not
    // the sweeper has probed them yet (a pool probed GOOD only ever ranks higher).
    await addPool("old");
    await addPool("spare");
    const v = await api<Volume>("POST", "/volumes", {
      name: "moved",
      sizeBytes: 1024 * 1024,
      pools: ["old", "spare"],
    });
    expect(v.status.replicas[0]!.pool).toBe("old");
    const token = await api<IssuedToken>("POST", "/tokens", {});
    const { credential } = await api<JoinResponse>(
      "POST",
      "/nodes/join",
      { name: "vm-w" },
      token.token,
    );
    const attached = await api<{ epoch: number }>("POST", "/volumes/moved/attach", { node: "vm-w" });

    // The writer: beats, and reports what it is doing with every replica it was given.
    // It reads the volume rather than listening for rings, so its beats are unconditional.
    const { liveness } = await api<DesiredState>("GET", "/nodes/vm-w/desired", undefined, credential);
    let copy: { state: "REBUILDING" | "ONLINE"; progress?: number } = {
      state: "REBUILDING",
      progress: 50,
    };
    /** What became of each beat. */
    const beats: string[] = [];
    const reportAndBeat = async () => {
      beats.push((await beat(liveness.url, "*", { at: new Date().toISOString() })).kind);
      const now = await api<Volume>("GET", "/volumes/moved");
      const replicas = now.status.replicas
        .filter((r) => r.state !== "CREATING" && r.state !== "RETIRING")
        .map((r) => (r.replaces ? { id: r.id, ...copy } : { id: r.id, state: "ONLINE" }));
      await api(
        "POST",
        "/nodes/vm-w/report",
        { volumes: [{ volume: "moved", epoch: attached.epoch, state: "SERVING", replicas }] },
        credential,
      );
    };
    let writing = Promise.resolve();
    const timer = setInterval(() => {
      writing = writing.then(reportAndBeat, reportAndBeat);
    }, 200);

    const watch = spawn(
      process.execPath,
      [BIN, "pool", "release", "old", "--watch", "--interval", "0.1"],
      { cwd: scratch, env: { PATH: process.env.PATH ?? "", ...env() } },
    );
    try {
      const lines: string[] = [];
      const exited = new Promise<number | null>((done) => watch.once("exit", done));
      const stderr: string[] = [];
      watch.stderr.on("data", (chunk: Buffer) => stderr.push(chunk.toString()));
      const waiters: Array<{ match: RegExp; done: () => void }> = [];
      createInterface({ input: watch.stdout }).on("line", (line) => {
        lines.push(line);
        for (const w of waiters.filter((x) => x.match.test(line))) w.done();
      });
      const seen = (match: RegExp) =>
        lines.some((l) => match.test(l))
          ? Promise.resolve()
          : new Promise<void>((done) => waiters.push({ match, done }));

      await seen(/^pool old: 50% RELEASING: releasing: 0 of 1 replica\(s\) moved, 1 moving$/);
      copy = { state: "ONLINE" };
      expect(await exited).toBe(0);
      expect(stderr.join("")).toBe("");
      expect(lines[0]).toBe("pool old: 0% RELEASING: releasing: 0 of 1 replica(s) moved, 1 moving");
      expect(lines.at(-1)).toBe("pool old: 100% RELEASED: released: 1 of 1 replica(s) moved");
      // One line per change: never the same line twice in a row.
      expect(lines.filter((l, i) => l === lines[i - 1])).toEqual([]);
    } finally {
      clearInterval(timer);
      // Only if the test failed before the watch ended.
      if (watch.exitCode === null) watch.kill();
      await writing;
    }
    // Every beat landed (a failure inside the writer's loop would only surface here).
    expect(beats.length).toBeGreaterThan(0);
    expect(beats.filter((kind) => kind !== "landed")).toEqual([]);
    const after = await api<Volume>("GET", "/volumes/moved");
    expect(after.status.replicas.map((r) => [r.pool, r.state])).toEqual([["spare", "ONLINE"]]);
  });
});
