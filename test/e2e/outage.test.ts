/**
 * The control plane's own outages fence nobody, end to end: Azurite, the
 * control plane in process at its default settings (a pass every 7.5 s,
 * SUSPECT after 4 s, LOST after 8 s), three agents as child processes
 * reaching the API through a partition of ours and the liveness table
 * through a fault proxy of ours, and fio's verifying load (nbd engine,
 * crc32c, verified as it goes) on a volume per node.
 *
 * 1. The API is unreachable for eight sweeper passes (about a minute)
 *    while the sweeper keeps running and judging: the agents' beats reach
 *    the liveness table all along.
 * 2. The whole control plane is stopped and started again while the three
 *    loads run.
 * 3. Every agent's heartbeats fail for four sweeper passes (the path, not
 *    the nodes: the sweeper still reads the table, and judges nobody).
 *
 * Each load runs from before the outage until after it ends. After each:
 * no `volume-fenced` event, no node LOST, fio reports no error, every
 * volume still served by its owner at the same epoch.
 *
 * 4. One node really dies while the API is unreachable: it is judged LOST
 *    and its volume fenced and failed over as usual (heartbeats do not
 *    need the API); its new owner serves it once it can fetch its desired
 *    state, and every byte written before the death reads back.
 *
 * Every wait is on something that happens (a sweeper pass, requests the
 * proxies see, log records, fio's exit), never on a timer.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../../agent/control/api-client.ts";
import { exportUri } from "../../agent/host/fuse-loop-driver.ts";
import type { Volume } from "../../contract/volume.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { readSweeperState } from "../../functions/registry/sweeper-state.ts";
import { volumes as volumeTable } from "../../functions/registry/volumes.ts";
import { type AgentProcess, startAgent } from "../control/agent-process.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";
import { toolPath } from "../harness/tools.ts";
import { ensureBundleBuilt } from "../infra/installer.ts";
import { type Partition, startPartition } from "./partition.ts";

const exec = promisify(execFile);
const NODES = ["node-1", "node-2", "node-3"] as const;
const VOLUMES = ["vol-1", "vol-2", "vol-3"] as const;
const SIZE = 16 * 1024 * 1024;

let dir: string;
let azurite: Azurite;
let liveness: FaultProxy;
let cp: LocalControlPlane;
let port: number;
let api: ApiClient;
let link: Partition;
const agents = new Map<string, AgentProcess>();
/** Where each volume was at the start: its owner and epoch. */
const placed = new Map<string, { owner: string; epoch: number }>();

async function startControlPlane(): Promise<LocalControlPlane> {
  return startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {
      PAGEDISK_LIVENESS_CONNECTION_STRING: azurite.connectionString.replace(
        /TableEndpoint=[^;]+/,
        `TableEndpoint=${liveness.origin}${new URL(azurite.tableEndpoint!).pathname}`,
      ),
    },
    port,
    stateDir: join(dir, "cp"),
    log: () => {},
  });
}

beforeAll(async () => {
  await ensureBundleBuilt();
  dir = await mkdtemp(join(tmpdir(), "pagedisk-outage-"));
  azurite = await startAzurite({ table: true });
  liveness = await startFaultProxy(azurite.tableEndpoint!);
  port = 0;
  cp = await startControlPlane();
  port = Number(new URL(cp.apiUrl).port);
  api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
  link = await startPartition(port);
  await api.createPool({
    name: "pa",
    container: "pa-disks",
    auth: { kind: "connectionString", connectionString: azurite.connectionString },
  });
  const token = (await api.createToken()).token;
  await Promise.all(
    NODES.map(async (node) => {
      const agent = await startAgent(agentArgs(node), { PAGEDISK_JOIN_TOKEN: token });
      agents.set(node, agent);
      await agent.waitForReport(() => true);
    }),
  );
  for (const [i, name] of VOLUMES.entries()) {
    const node = NODES[i]!;
    await api.createVolume({ name, sizeBytes: SIZE, requiredNodes: [...NODES], failover: "automatic" });
    const agent = agents.get(node)!;
    const from = agent.logs.length;
    const attached = await api.attachVolume(name, node);
    await agent.waitForLog((r) => r.msg === "volume serving" && r.volume === name, from);
    placed.set(name, { owner: node, epoch: attached.epoch });
  }
}, 120_000);

afterAll(async () => {
  await Promise.all([...agents.values()].map((a) => a.stop("SIGKILL")));
  await link?.close();
  await cp?.close();
  await liveness?.close();
  await azurite?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function agentArgs(node: string): string[] {
  return ["--control-plane", link.origin, "--state-dir", join(dir, node), "--name", node, "--kernel", "none"];
}

function socketOf(node: string, volume: string): string {
  return join(dir, node, "sockets", `${volume}.sock`);
}

interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

/**
 * fio against `volume` on `node`: random 64 KiB writes at depth 4, each
 * checked (crc32c) soon after it is written, until `until` settles (a
 * load); or one pass writing (`write`) or verifying (`verify`) the first 8
 * MiB. A load told to stop must still be running then: one that ended on
 * its own did not cover what the test did meanwhile.
 */
async function fio(node: string, volume: string, mode: { until: Promise<void> } | "write" | "verify"): Promise<FioJob> {
  const name = `${volume}-${typeof mode === "string" ? mode : "load"}-${Date.now()}`;
  const file = join(dir, `${name}.fio`);
  const output = join(dir, `${name}.json`);
  await writeFile(
    file,
    [
      "[global]",
      "ioengine=nbd",
      `uri=${exportUri(socketOf(node, volume), volume)}`,
      "rw=randwrite",
      "bs=64k",
      "iodepth=4",
      "size=8M",
      "verify=crc32c",
      "verify_fatal=1",
      "verify_state_save=0",
      ...(typeof mode === "string"
        ? mode === "write"
          ? ["do_verify=0", "randseed=7"]
          : ["do_verify=1", "verify_only=1", "randseed=7"]
        : // A bound far past any outage here; the test stops the load long before.
          ["verify_backlog=64", "time_based=1", "runtime=3600"]),
      `[${volume}]`,
      "",
    ].join("\n"),
  );
  const run = exec(toolPath("fio"), [file, "--output-format=json", `--output=${output}`], {
    cwd: dir,
    timeout: 600_000,
  });
  let stopped = false;
  let ended = false;
  if (typeof mode !== "string") {
    void mode.until.then(() => {
      if (ended) return;
      stopped = true;
      // fio stops its jobs on SIGINT and writes its report as usual.
      run.child.kill("SIGINT");
    });
  }
  try {
    await run;
  } catch (err) {
    // A stopped fio exits 128; anything else is a failure.
    if (!(stopped && (err as { code?: unknown }).code === 128)) throw err;
  } finally {
    ended = true;
  }
  if (typeof mode !== "string" && !stopped) throw new Error(`fio on ${volume} ended before it was stopped`);
  const text = await readFile(output, "utf8");
  // A stopped fio's report starts with the line saying so ("fio: terminating on signal 2").
  return (JSON.parse(text.slice(text.indexOf("{"))) as { jobs: FioJob[] }).jobs[0]!;
}

/** A verifying load on every volume where it was placed, until `stop()`, which resolves with their jobs. */
function loads(): { stop(): Promise<FioJob[]> } {
  let stop!: () => void;
  const until = new Promise<void>((resolve) => (stop = resolve));
  const jobs = Promise.all(VOLUMES.map((v) => fio(placed.get(v)!.owner, v, { until })));
  // Failed early: reported by stop().
  jobs.catch(() => {});
  return {
    stop() {
      stop();
      return jobs;
    },
  };
}

function expectClean(jobs: FioJob[]): void {
  for (const job of jobs) {
    expect(job.error, job.jobname).toBe(0);
    expect(job.write.io_bytes, job.jobname).toBeGreaterThan(0);
    // Read back and checked as it went.
    expect(job.read.io_bytes, job.jobname).toBeGreaterThan(0);
  }
}

/** Nobody fenced, nobody LOST, every volume where it was: what an outage of ours must leave. */
async function expectNothingFenced(volumes: readonly string[] = VOLUMES): Promise<void> {
  expect((await api.listEvents({ type: "volume-fenced" })).items).toEqual([]);
  expect((await api.listEvents({ type: "node-lost" })).items).toEqual([]);
  for (const name of volumes) {
    const v = await api.getVolume(name);
    expect(v.status, name).toMatchObject({ state: "ATTACHED", ownerNode: placed.get(name)!.owner, epoch: placed.get(name)!.epoch });
  }
  for (const node of NODES) expect((await api.getNode(node)).state, node).toBe("READY");
}

/**
 * Resolves once the liveness proxy has received `count` more beats: MERGEs
 * of a liveness row (the agents beat with them; the control plane MERGEs a
 * row only to ring it).
 */
function beats(count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const stop = liveness.onRequest((req) => {
      if (req.method !== "MERGE" || ++seen < count) return;
      stop();
      resolve();
    });
  });
}

/** The sweeper's state as its last pass recorded it. */
async function sweeperState() {
  return (await readSweeperState(cp.runtime.cp.registry))!.value;
}

describe("outages of the control plane itself", () => {
  it("fences nobody while the API is unreachable for eight sweeper passes and the sweeper keeps judging", async () => {
    const load = loads();
    link.cut();
    // Eight passes, about a minute at 7.5 s. Each records itself, with the heartbeats' path known to work:
    // the sweeper judged every node at every pass.
    const recorded: string[] = [];
    for (let pass = 0; pass < 8; pass++) {
      await cp.nextPass();
      const state = await sweeperState();
      expect(state.pathSince, `pass ${pass + 1}`).not.toBeNull();
      recorded.push(state.lastPassAt!);
    }
    link.restore();
    expectClean(await load.stop());
    await expectNothingFenced();
    // The sweeper ran all along: eight passes recorded, each after the one before.
    expect(new Set(recorded).size).toBe(8);
    expect([...recorded].sort()).toEqual(recorded);
  });

  it("fences nobody when the whole control plane stops and starts again under load", async () => {
    const load = loads();
    await cp.close();
    // Down while every agent beats eight times (16 s, twice lostAfter): the beats still reach the
    // liveness table, but no sweeper reads them, and the agents' reports and fetches fail.
    await beats(NODES.length * 8);
    cp = await startControlPlane();
    // The new sweeper judges, with the heartbeats' path known to work, for two passes.
    await cp.nextPass();
    await cp.nextPass();
    expect((await sweeperState()).pathSince).not.toBeNull();
    expectClean(await load.stop());
    await expectNothingFenced();
  });

  it("fences nobody while every agent's heartbeats fail for four sweeper passes", async () => {
    const load = loads();
    const refusedBefore = liveness.faulted();
    /** The rows whose beats were refused. */
    const refusedRows = new Set<string>();
    liveness.inject({
      fault: { type: "reset" },
      match: (r) => {
        if (r.method !== "MERGE") return false;
        refusedRows.add(r.url.pathname);
        return true;
      },
    });
    for (let pass = 0; pass < 4; pass++) await cp.nextPass();
    // Every agent's beats were refused, and the sweeper saw the path down: it judged nobody.
    expect(liveness.faulted() - refusedBefore).toBeGreaterThan(0);
    expect(refusedRows.size).toBe(NODES.length);
    expect((await sweeperState()).pathSince).toBeNull();
    liveness.clear();
    // The first pass after sees heartbeats again; the next one judges with them.
    await cp.nextPass();
    await cp.nextPass();
    expect((await sweeperState()).pathSince).not.toBeNull();
    expectClean(await load.stop());
    await expectNothingFenced();
  });
});

describe("a node that really dies while the API is unreachable", () => {
  it("is failed over as usual; its volume is served again once the API answers", async () => {
    const victim = "node-3";
    const volume = "vol-3";
    const written = await fio(victim, volume, "write");
    expect(written.error).toBe(0);
    link.cut();
    await agents.get(victim)!.stop("SIGKILL");
    agents.delete(victim);

    // Heartbeats do not need the API: the sweeper fences and fails the volume over meanwhile.
    let moved: Volume | undefined;
    for (let pass = 0; pass < 10 && !moved; pass++) {
      await cp.nextPass();
      const v = (await volumeTable(cp.runtime.cp.registry).get(volume))!.value;
      if (v.status.state === "ATTACHED" && v.status.ownerNode !== victim) moved = await api.getVolume(volume);
    }
    expect(moved?.status.epoch).toBe(placed.get(volume)!.epoch + 2);
    const owner = moved!.status.ownerNode!;
    const agent = agents.get(owner)!;
    const from = agent.logs.length;

    const restoredAt = Date.now();
    link.restore();
    const serving = await agent.waitForLog((r) => r.msg === "volume serving" && r.volume === volume, from);
    console.log(`outage: ${volume} served on ${owner} ${Date.parse(serving.time as string) - restoredAt} ms after the API answered again`);
    const verified = await fio(owner, volume, "verify");
    expect(verified.error).toBe(0);
    expect(verified.read.io_bytes).toBe(8 * 1024 * 1024);

    // Only the dead node's volume moved.
    expect((await api.listEvents({ type: "volume-fenced" })).items.map((e) => e.volume)).toEqual([volume]);
    expect((await api.getNode(victim)).state).toBe("LOST");
    await expectNothingFencedBut(volume);
  });
});

async function expectNothingFencedBut(moved: string): Promise<void> {
  for (const name of VOLUMES.filter((v) => v !== moved)) {
    const v = await api.getVolume(name);
    expect(v.status, name).toMatchObject({ state: "ATTACHED", ownerNode: placed.get(name)!.owner, epoch: placed.get(name)!.epoch });
  }
}
