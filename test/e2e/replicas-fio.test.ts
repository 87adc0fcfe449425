/**
 * A two-replica volume under fio's verifying load while one pool goes away
 * and comes back (issue 5: "no client error, volume degraded; pool back:
 * resync copies only dirty regions (count the bytes), replicas byte-equal").
 * Real parts only, as in replicas.test.ts: Azurite, the control plane in
 * process with its sweeper, `pagedisk agent run` as a child process, pool
 * pa reached directly and pool pb through a fault proxy; the client is fio's
 * nbd engine (libnbd) on the export's unix socket, with crc32c verification.
 *
 * fio's write phase is one run of two jobs over disjoint halves of the
 * volume. Pool pb is cut while the first job writes (once 12 of its 14
 * MiB have gone through pb's proxy); the second job starts only once the test has
 * seen the DEGRADED report: its `exec_prerun` reads a FIFO the test writes
 * then. So the write phase spans both the cut and the DEGRADED report by
 * construction, not by timing. A second fio run (`verify_only`) reads every
 * block back and checks it.
 *
 * What the resync must copy is known exactly: fio writes every 64 KiB block
 * once, the dirty log's granularity is 64 KiB, so the dirty bytes are the
 * volume less the Put Page bytes pb's proxy let through before the cut, and
 * the resync's Put Pages through pb are those dirty bytes, no more.
 */
import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VolumeReport } from "../../contract/node.ts";
import type { Volume } from "../../contract/volume.ts";
import type { ApiClient } from "../../agent/control/api-client.ts";
import { exportUri } from "../../agent/host/fuse-loop-driver.ts";
import { type AgentProcess, startAgent } from "../control/agent-process.ts";
import type { FaultProxy, ProxiedRequest } from "../harness/fault-proxy.ts";
import { toolPath } from "../harness/tools.ts";
import { agentStatusOf, type ReplicaCluster, startReplicaCluster } from "./replica-cluster.ts";

const exec = promisify(execFile);

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 16 * MiB;
/** The first job writes [0, FIRST), the second [FIRST, SIZE). */
const FIRST = 14 * MiB;
/** fio's block size and the agent's dirty-log granularity: a write dirties exactly its bytes. */
const BLOCK = 64 * KiB;
/** pb is cut once this much of the first job has reached it: the resync has a quarter of the volume or less to copy. */
const CUT_AFTER_BYTES = 12 * MiB;
const NODE = "node-f";
const VOLUME = "vol-fio";

let cluster: ReplicaCluster;
let api: ApiClient;
let dir: string;
let proxyB: FaultProxy;
let agent: AgentProcess | undefined;
/** The FIFO the second fio job waits on; opened here for reading at the end in case fio died first. */
let fifo: string | undefined;

beforeAll(async () => {
  cluster = await startReplicaCluster("pagedisk-replicas-fio-", NODE, 1);
  ({ api, dir } = cluster);
  proxyB = cluster.proxies[0]!;
  agent = await startAgent(cluster.agentArgs(), { PAGEDISK_JOIN_TOKEN: cluster.joinToken });
  await agent.waitForReport(() => true);
});

afterAll(async () => {
  // A test writing the FIFO after fio died would wait for a reader for ever.
  if (fifo) await (await open(fifo, constants.O_RDONLY | constants.O_NONBLOCK).catch(() => undefined))?.close();
  await agent?.stop("SIGKILL");
  await cluster?.close();
});

interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

/**
 * The job file: two jobs, [0, FIRST) then [FIRST, SIZE), random 64 KiB
 * writes at queue depth 4, each block once, crc32c headers. `verify`: the
 * same workload read back and checked (`verify_only`) instead of written;
 * `waitOn`: the second job starts once that FIFO is written.
 */
function jobFile(phase: "write" | "verify", waitOn?: string): string {
  return [
    "[global]",
    "ioengine=nbd",
    `uri=${exportUri(join(cluster.stateDir, "sockets", `${VOLUME}.sock`), VOLUME)}`,
    "rw=randwrite",
    `bs=${BLOCK}`,
    "iodepth=4",
    "verify=crc32c",
    "verify_fatal=1",
    // fio otherwise leaves *-verify.state files behind.
    "verify_state_save=0",
    ...(phase === "write" ? ["do_verify=0"] : ["do_verify=1", "verify_only=1"]),
    "[before-degraded]",
    "offset=0",
    `size=${FIRST}`,
    "[degraded]",
    "stonewall",
    ...(waitOn ? [`exec_prerun=cat ${waitOn}`] : []),
    `offset=${FIRST}`,
    `size=${SIZE - FIRST}`,
    "",
  ].join("\n");
}

/** Run fio on `jobs` (in `dir`, where exec_prerun leaves its output) and read its JSON report. */
async function fio(name: string, jobs: string): Promise<FioJob[]> {
  const file = join(dir, `${name}.fio`);
  const output = join(dir, `${name}.json`);
  await writeFile(file, jobs);
  await exec(toolPath("fio"), [file, "--output-format=json", `--output=${output}`], { cwd: dir, timeout: 90_000 });
  return (JSON.parse(await readFile(output, "utf8")) as { jobs: FioJob[] }).jobs;
}

/** Bytes a Put Page or Clear Pages request covers. */
function rangeBytes(req: ProxiedRequest): number {
  const range = /bytes=(\d+)-(\d+)/.exec(String(req.headers["x-ms-range"] ?? ""));
  return range ? Number(range[2]) - Number(range[1]) + 1 : 0;
}

/** The volume as the control plane last heard of it from the agent. */
async function reported(): Promise<VolumeReport | undefined> {
  return (await api.getNode(NODE)).volumes.find((v) => v.volume === VOLUME);
}

function blobBytes(v: Volume, replicaId: string): Promise<Buffer> {
  const r = v.status.replicas.find((x) => x.id === replicaId)!;
  return cluster.blobOf(v, r).downloadToBuffer(0, SIZE);
}

describe("a two-replica volume under fio verify while a pool is cut", () => {
  it("serves fio with no error through the cut, degraded, then resyncs exactly the dirty bytes", async () => {
    const a = agent!;
    const volume = await api.createVolume({ name: VOLUME, sizeBytes: SIZE, replicas: 2 });
    const idA = volume.status.replicas.find((r) => r.pool === "pa")!.id;
    const idB = volume.status.replicas.find((r) => r.pool === "pb")!.id;
    let from = a.logs.length;
    await api.attachVolume(VOLUME, NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME, from);

    // pb is cut as the first job's Put Pages pass: those counted went through (the rule is
    // looked up before listeners hear of a request), every later request is reset.
    let reachedB = 0;
    let cut = false;
    const stopWatching = proxyB.onRequest((req) => {
      if (req.kind !== "putPage" || cut) return;
      reachedB += rangeBytes(req);
      if (reachedB < CUT_AFTER_BYTES) return;
      cut = true;
      proxyB.inject({ fault: { type: "reset" } });
    });
    fifo = join(dir, "degraded.fifo");
    await exec("mkfifo", [fifo]);
    from = a.logs.length;
    const writing = fio("write", jobFile("write", fifo));

    const offline = await a.waitForLog((r) => r.msg === "replica offline" && r.replica === idB, from);
    expect(offline).toMatchObject({ pool: "pb" });
    const degraded = await cluster.untilPass(reported, (v) => v?.state === "DEGRADED", "a DEGRADED report");
    expect(degraded?.replicas.find((r) => r.id === idB)).toMatchObject({ state: "OFFLINE" });
    expect(degraded?.replicas.find((r) => r.id === idA)).toMatchObject({ state: "ONLINE" });
    // Seen degraded: the second job may start. Opening the FIFO waits for fio's reader, unless fio is gone.
    const released = writeFile(fifo, "go\n");
    // Should fio fail before it opens the FIFO, fio's error is the one to see (afterAll releases the writer).
    released.catch(() => {});
    const written = await writing;
    await released;
    stopWatching();
    expect(cut).toBe(true);
    for (const job of written) expect(job, job.jobname).toMatchObject({ error: 0 });
    expect(written.reduce((n, j) => n + j.write.io_bytes, 0)).toBe(SIZE);

    // fio is done: what the agent counts now is final, and its reports catch up with it.
    const live = (await agentStatusOf(cluster.stateDir, VOLUME))?.replicas.find((r) => r.id === idB)?.dirtyBytes;
    const after = await cluster.untilPass(
      reported,
      (v) => v?.replicas.find((r) => r.id === idB)?.dirtyBytes === live,
      "the dirty bytes reported",
    );
    expect(after?.state).toBe("DEGRADED");
    const dirtyBytes = after?.replicas.find((r) => r.id === idB)?.dirtyBytes;
    // Each 64 KiB block was written once; those pb did not take before the cut are dirty, to the byte.
    expect(reachedB).toBeLessThan(FIRST);
    expect(dirtyBytes).toBe(SIZE - reachedB);
    expect(dirtyBytes).toBeLessThanOrEqual(SIZE - CUT_AFTER_BYTES);

    // The verify pass: every block read back (from pa) and its crc32c checked.
    const verified = await fio("verify", jobFile("verify"));
    for (const job of verified) expect(job, job.jobname).toMatchObject({ error: 0 });
    expect(verified.reduce((n, j) => n + j.read.io_bytes, 0)).toBe(SIZE);

    // pb back: the control plane orders a resync; count what reaches pb while it runs.
    const counted = { putBytes: 0, clearBytes: 0 };
    const stopCounting = proxyB.onRequest((req) => {
      if (req.kind === "putPage") counted.putBytes += rangeBytes(req);
      if (req.kind === "clearPages") counted.clearBytes += rangeBytes(req);
    });
    from = a.logs.length;
    proxyB.clear();
    const started = await a.waitForLog((r) => r.msg === "replica copy started" && r.replica === idB, from);
    expect(started).toMatchObject({ kind: "resync", full: false });
    await a.waitForLog((r) => r.msg === "replica online" && r.replica === idB, from);
    stopCounting();
    expect(counted.putBytes).toBe(dirtyBytes);
    expect(counted.clearBytes).toBe(0);

    const record = await cluster.untilPass(
      () => api.getVolume(VOLUME),
      (v) => v.status.replicas.every((r) => r.state === "ONLINE"),
      "both replicas ONLINE in the record",
    );
    expect(record.status.replicas.map((r) => r.id).sort()).toEqual([idA, idB].sort());
    await cluster.untilPass(reported, (v) => v?.state === "SERVING", "a SERVING report");
    const [bytesA, bytesB] = await Promise.all([blobBytes(record, idA), blobBytes(record, idB)]);
    expect(bytesA.equals(bytesB)).toBe(true);
  });
});
