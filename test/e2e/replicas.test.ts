/**
 * Replicated volumes end to end, with real parts only: Azurite (blob +
 * table), the control plane in process on a real port with its sweeper
 * (pool health, repair), and `pagedisk agent run` as a child process. Each
 * pool is a container of the one Azurite account reached through its own
 * endpoint: pool pa directly, pools pb and pc through a fault proxy each,
 * so that "a pool outage" is that proxy resetting every connection (the
 * agent's and the control plane's alike). Data goes in with nbdcopy and
 * qemu-io (clients nobody here wrote), which also read it back verifying;
 * the blobs are compared byte for byte from outside with the SDK.
 *
 * (a) A one-replica volume under writes is given a second replica
 *     (PATCH replicas=2): the agent rebuilds it on the running export; the
 *     NBD connection writing all along stays up, the volume is never
 *     detached or served anew.
 *
 * Then cases run in order on one two-replica volume:
 * (b) pool pb cut: clients see no error, the volume is DEGRADED, the
 *     replica OFFLINE, a storage-failure names the pool; pool back: the
 *     control plane orders a resync and the agent copies only the regions
 *     written meanwhile; the replicas end byte-equal.
 * (c) pool pb lost for good (annotated health=bad): rebuilt onto pool pc,
 *     progress seen on the way, byte-equal, the old replica retired.
 * (d) pool pc cut, then back: the agent is killed mid-resync; restarted,
 *     it resumes from its dirty-region log (copies the missed regions, not
 *     the volume).
 * (e) the agent restarts while pool pc is cut: it serves from pa, marks
 *     pc's replica offline on pa before any write, and brings it back with
 *     a full resync (nothing recorded what it missed).
 * (f) pool pc lost for good, rebuilt onto pool pd: the agent is killed
 *     mid-rebuild; restarted, it rebuilds again from the start (a rebuild
 *     keeps no record of what it copied), the new replica ends byte-equal
 *     and pc's is retired, its blob deleted.
 *
 * Every wait is on something a process says (log records, reports,
 * proxy requests), never on a timer.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VolumeReport } from "../../contract/node.ts";
import type { Volume } from "../../contract/volume.ts";
import type { ApiClient } from "../../agent/control/api-client.ts";
import { replicaContainerName } from "../../functions/storage/replica-container.ts";
import { exportUri } from "../../agent/host/fuse-loop-driver.ts";
import { type AgentProcess, startAgent } from "../control/agent-process.ts";
import type { FaultProxy } from "../harness/fault-proxy.ts";
import { runTool } from "../harness/tools.ts";
import { CMD, RawClient } from "../nbd/raw-client.ts";
import { agentStatusOf, type ReplicaCluster, startReplicaCluster } from "./replica-cluster.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;
/** The agent's dirty-log granularity here: writes of 64 KiB aligned to it dirty exactly their bytes. */
const GRANULE = 64 * KiB;
const NODE = "node-r";
const VOLUME = "vol-r";

let cluster: ReplicaCluster;
let api: ApiClient;
let blobs: BlobServiceClient;
let proxyB: FaultProxy;
let proxyC: FaultProxy;
let proxyD: FaultProxy;
let agent: AgentProcess | undefined;
/** What the volume must hold: every acknowledged write applied in order. */
const expected = Buffer.alloc(SIZE);

beforeAll(async () => {
  cluster = await startReplicaCluster("pagedisk-replicas-", NODE, 3);
  ({ api, blobs } = cluster);
  [proxyB, proxyC, proxyD] = cluster.proxies as [FaultProxy, FaultProxy, FaultProxy];
  agent = await startAgent(cluster.agentArgs(), { PAGEDISK_JOIN_TOKEN: cluster.joinToken });
  await agent.waitForReport(() => true);
});

afterAll(async () => {
  await agent?.stop("SIGKILL");
  await cluster?.close();
});

function socketOf(volume: string): string {
  return join(cluster.stateDir, "sockets", `${volume}.sock`);
}

function uri(): string {
  return exportUri(socketOf(VOLUME), VOLUME);
}

function blobOf(v: Volume, replicaId: string) {
  const r = v.status.replicas.find((x) => x.id === replicaId)!;
  return cluster.blobOf(v, r);
}

async function blobBytes(v: Volume, replicaId: string): Promise<Buffer> {
  return blobOf(v, replicaId).downloadToBuffer(0, SIZE);
}

/** The volume as the agent's status API shows it now. */
function statusVolume() {
  return agentStatusOf(cluster.stateDir, VOLUME);
}

/** The volume as the control plane last heard of it from this node. */
async function reported(volume = VOLUME): Promise<VolumeReport | undefined> {
  return (await api.getNode(NODE)).volumes.find((v) => v.volume === volume);
}

/** Put Page bytes a proxy forwards while counting; Clear Pages are counted apart. */
function countPages(proxy: FaultProxy) {
  const counted = { putBytes: 0, clearBytes: 0 };
  const stop = proxy.onRequest((req) => {
    const range = /bytes=(\d+)-(\d+)/.exec(String(req.headers["x-ms-range"] ?? ""));
    if (!range) return;
    const bytes = Number(range[2]) - Number(range[1]) + 1;
    if (req.kind === "putPage") counted.putBytes += bytes;
    if (req.kind === "clearPages") counted.clearBytes += bytes;
  });
  return { counted, stop };
}

/** Whether a proxied request writes at or above the middle of the volume. */
function upperHalf(req: { headers: Record<string, unknown> }): boolean {
  return Number(/bytes=(\d+)-/.exec(String(req.headers["x-ms-range"]))?.[1] ?? 0) >= SIZE / 2;
}

/** Write 64 KiB random regions at `offsets` through qemu-io, each read back and verified by it; recorded in `expected`. */
async function writeRegions(offsets: number[]): Promise<void> {
  const args = ["-f", "raw", uri()];
  for (const [i, offset] of offsets.entries()) {
    const seed = (randomBytes(1)[0]! % 200) + 1 + i;
    args.push("-c", `write -P ${seed} ${offset} ${GRANULE}`, "-c", `read -P ${seed} ${offset} ${GRANULE}`);
    expected.fill(seed, offset, offset + GRANULE);
  }
  args.push("-c", "flush");
  const { stdout } = await runTool("qemu-io", args);
  expect(stdout).not.toMatch(/fail|error|Pattern verification/i);
}

/** Every byte of the export through nbdcopy. */
async function readExport(): Promise<Buffer> {
  const file = join(cluster.dir, "read.img");
  await writeFile(file, "");
  await truncate(file, SIZE);
  await runTool("nbdcopy", [uri(), file]);
  const data = await readFile(file);
  await rm(file);
  return data;
}

async function patchPool(name: string, body: unknown): Promise<void> {
  const { cp } = cluster;
  const res = await fetch(`${cp.apiUrl}/pools/${name}/annotations`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${cp.adminKey}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(res.status, await res.clone().text()).toBe(200);
}

const replicaIn = (v: VolumeReport | undefined, id: string) => v?.replicas.find((r) => r.id === id);

describe("raising the replica count of an attached volume", () => {
  it("(a) rebuilds the new replica on the running export while a client writes, never reopening it", async () => {
    const a = agent!;
    const name = "vol-one";
    const content = Buffer.alloc(SIZE);
    const volume = await api.createVolume({ name, sizeBytes: SIZE, replicas: 1 });
    const first = volume.status.replicas[0]!;
    const attachedFrom = a.logs.length;
    await api.attachVolume(name, NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === name, attachedFrom);

    // One NBD connection for the whole case: a reopen of the export would close it.
    const client = await RawClient.connect(socketOf(name));
    let closed = false;
    void client.closed.then(() => (closed = true));
    await client.handshake(name);
    let handle = 0n;
    const write = async (offset: number, data: Buffer): Promise<void> => {
      const reply = await client.request({ type: CMD.WRITE, handle: ++handle, offset, payload: data });
      expect(reply.error).toBe(0);
      data.copy(content, offset);
    };
    // The first half written, the second a hole the writer below fills piecemeal.
    for (let at = 0; at < SIZE / 2; at += MiB) await write(at, randomBytes(MiB));

    // The rebuild stops halfway, at the pool behind proxy pb: writing the new
    // replica there, or reading the old one there; so REBUILDING is seen.
    proxyB.inject({ fault: { type: "hang" }, only: [first.pool === "pb" ? "getBlob" : "putPage"], match: upperHalf });

    let writing = true;
    let writes = 0;
    let wrote: (() => void) | undefined;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await write(((i * 5) % (SIZE / GRANULE)) * GRANULE, randomBytes(GRANULE));
        writes++;
        wrote?.();
      }
    })();

    let from = a.logs.length;
    await api.updateVolume(name, { replicas: 2 });
    const started = await a.waitForLog((r) => r.msg === "replica copy started" && r.volume === name, from);
    expect(started).toMatchObject({ kind: "rebuild" });
    const added = started.replica as string;
    expect(started.pool).not.toBe(first.pool);
    const rebuilding = await cluster.untilPass(
      () => reported(name),
      (v) => replicaIn(v, added)?.state === "REBUILDING",
      "the new replica reported REBUILDING",
    );
    expect(rebuilding?.state).toBe("DEGRADED");
    expect(replicaIn(rebuilding, first.id)?.state).toBe("ONLINE");
    proxyB.clear();
    await a.waitForLog((r) => r.msg === "replica online" && r.replica === added, from);
    // More writes after it is ONLINE, through the same connection: both replicas take them.
    const target = writes + 3;
    await new Promise<void>((resolve) => {
      wrote = () => {
        if (writes >= target) resolve();
      };
    });
    writing = false;
    await writer;

    const record = await cluster.untilPass(
      () => api.getVolume(name),
      (v) => v.status.replicas.length === 2 && v.status.replicas.every((r) => r.state === "ONLINE"),
      "both replicas ONLINE in the record",
    );
    await cluster.untilPass(() => reported(name), (v) => v?.state === "SERVING" && v.replicas.length === 2, "a SERVING report");
    expect(writes).toBeGreaterThan(3);
    for (const r of record.status.replicas) expect((await blobBytes(record, r.id)).equals(content)).toBe(true);

    // Never reopened: served once, never detached, the client still connected.
    const own = a.logs.slice(attachedFrom).filter((r) => r.volume === name);
    expect(own.filter((r) => r.msg === "volume serving")).toHaveLength(1);
    expect(own.filter((r) => r.msg === "volume detached")).toEqual([]);
    expect(closed).toBe(false);
    const reply = await client.request({ type: CMD.READ, handle: ++handle, offset: 0, length: MiB });
    expect(reply.data?.equals(content.subarray(0, MiB))).toBe(true);

    client.close();
    from = a.logs.length;
    await api.detachVolume(name);
    await a.waitForLog((r) => r.msg === "volume detached" && r.volume === name, from);
  });
});

describe("a two-replica volume through pool outages", () => {
  let volume: Volume;
  let epoch: number;
  let idA: string;
  let idB: string;
  let idC: string;

  it("(b) keeps serving with pool pb cut, then resyncs only what pb missed", async () => {
    const a = agent!;
    volume = await api.createVolume({ name: VOLUME, sizeBytes: SIZE, replicas: 2 });
    idA = volume.status.replicas.find((r) => r.pool === "pa")!.id;
    idB = volume.status.replicas.find((r) => r.pool === "pb")!.id;
    let from = a.logs.length;
    epoch = (await api.attachVolume(VOLUME, NODE)).epoch;
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME, from);

    // The whole volume, written and flushed; both replicas hold it.
    randomBytes(SIZE).copy(expected);
    const source = join(cluster.dir, "initial.img");
    await writeFile(source, expected);
    await runTool("nbdcopy", ["--flush", source, uri()]);
    expect((await blobBytes(volume, idA)).equals(expected)).toBe(true);
    expect((await blobBytes(volume, idB)).equals(expected)).toBe(true);

    // Pool pb goes away: every connection to it is reset.
    from = a.logs.length;
    proxyB.inject({ fault: { type: "reset" } });
    const outage = [1 * MiB, 3 * MiB + GRANULE, 6 * MiB];
    await writeRegions(outage);
    const offline = await a.waitForLog((r) => r.msg === "replica offline" && r.replica === idB, from);
    expect(offline).toMatchObject({ pool: "pb" });
    // Reports composed while the writes went on may show fewer dirty bytes: the one after them shows all.
    const degraded = await cluster.untilPass(
      reported,
      (v) => v?.state === "DEGRADED" && replicaIn(v, idB)?.dirtyBytes === outage.length * GRANULE,
      "a DEGRADED report with every write of the outage dirty",
    );
    expect(replicaIn(degraded, idB)).toMatchObject({ state: "OFFLINE", error: expect.any(String) });
    expect(replicaIn(degraded, idA)).toMatchObject({ state: "ONLINE" });
    const failures = await cluster.untilPass(
      () => api.listEvents({ volume: VOLUME, type: "storage-failure" }),
      (page) => page.items.length > 0,
      "a storage-failure event",
    );
    expect(failures.items[0]).toMatchObject({ node: NODE, pool: "pb", data: expect.objectContaining({ replica: idB }) });
    // The durable mark: pa's blob names pb's replica as missing writes.
    expect((await blobOf(volume, idA).getProperties()).metadata).toMatchObject({
      pagediskoffline: idB,
      pagediskofflineepoch: String(epoch),
    });
    expect((await readExport()).equals(expected)).toBe(true);

    // Pool pb is back: the control plane sees it GOOD and orders a resync.
    const pages = countPages(proxyB);
    from = a.logs.length;
    proxyB.clear();
    await a.waitForLog((r) => r.msg === "replica copy started" && r.replica === idB, from);
    await a.waitForLog((r) => r.msg === "replica online" && r.replica === idB, from);
    pages.stop();
    expect(pages.counted.putBytes).toBe(outage.length * GRANULE);
    await cluster.untilPass(reported, (v) => v?.state === "SERVING", "a SERVING report");
    const record = await cluster.untilPass(
      () => api.getVolume(VOLUME),
      (v) => v.status.replicas.every((r) => r.state === "ONLINE"),
      "both replicas ONLINE in the record",
    );
    expect(record.status.replicas.map((r) => r.id).sort()).toEqual([idA, idB].sort());
    expect((await blobBytes(volume, idA)).equals(expected)).toBe(true);
    expect((await blobBytes(volume, idB)).equals(expected)).toBe(true);
    for (const id of [idA, idB]) {
      expect((await blobOf(volume, id).getProperties()).metadata).not.toHaveProperty("pagediskoffline");
    }
  });

  it("(c) rebuilds onto pool pc when pool pb is lost for good, showing progress, and retires the old replica", async () => {
    const a = agent!;
    await api.createPool({ name: "pc", container: "pc-disks", auth: { kind: "connectionString", connectionString: cluster.via(proxyC) } });
    let from = a.logs.length;
    proxyB.inject({ fault: { type: "reset" } });
    await writeRegions([2 * MiB]);
    await a.waitForLog((r) => r.msg === "replica offline" && r.replica === idB, from);

    // The second half of the copy waits at pc's proxy, so the copy is seen half done.
    proxyC.inject({ fault: { type: "hang" }, only: ["putPage"], match: upperHalf });
    from = a.logs.length;
    await patchPool("pb", { health: "bad" });
    const started = await a.waitForLog((r) => r.msg === "replica copy started" && r.pool === "pc", from);
    idC = started.replica as string;
    expect(started).toMatchObject({ kind: "rebuild" });
    const seen: number[] = [];
    const halfway = await cluster.untilPass(
      statusVolume,
      (v) => {
        const p = v?.replicas.find((r) => r.id === idC)?.progress;
        if (p !== undefined) seen.push(p);
        return p !== undefined && p > 0;
      },
      "rebuild progress",
    );
    expect(halfway!.replicas.find((r) => r.id === idC)).toMatchObject({ state: "REBUILDING", pool: "pc" });
    expect(halfway!.state).toBe("DEGRADED");
    // The control plane has the progress too.
    await cluster.untilPass(
      () => api.getVolume(VOLUME),
      (v) => (v.status.replicas.find((r) => r.id === idC)?.progress ?? 0) > 0,
      "progress in the record",
    );
    proxyC.clear();
    await a.waitForLog((r) => r.msg === "replica online" && r.replica === idC, from);
    expect(seen).toEqual([...seen].sort((x, y) => x - y));
    expect(Math.max(...seen)).toBeLessThan(100);

    const record = await cluster.untilPass(
      () => api.getVolume(VOLUME),
      (v) => v.status.replicas.length === 2 && v.status.replicas.every((r) => r.state === "ONLINE"),
      "pb's replica retired and pc's ONLINE",
    );
    volume = record;
    expect(record.status.replicas.map((r) => r.pool).sort()).toEqual(["pa", "pc"]);
    await a.waitForLog((r) => r.msg === "replica removed" && r.replica === idB, from);
    await cluster.untilPass(reported, (v) => v?.state === "SERVING" && v.replicas.length === 2, "a SERVING report with two replicas");
    expect((await blobBytes(volume, idA)).equals(expected)).toBe(true);
    expect((await blobBytes(volume, idC)).equals(expected)).toBe(true);
    const retired = await api.listEvents({ volume: VOLUME, type: "replica-retired" });
    expect(retired.items.length).toBeGreaterThan(0);
    expect((await readExport()).equals(expected)).toBe(true);
  });

  it("(d) resumes a resync after the agent is killed in the middle of it, from the dirty-region log", async () => {
    let a = agent!;
    let from = a.logs.length;
    proxyC.inject({ fault: { type: "reset" } });
    const outage = [512 * KiB, 5 * MiB];
    await writeRegions(outage);
    await a.waitForLog((r) => r.msg === "replica offline" && r.replica === idC, from);
    await cluster.untilPass(reported, (v) => replicaIn(v, idC)?.state === "OFFLINE", "pc's replica reported OFFLINE");

    // Back, but every Put Page waits at the proxy: the resync starts and cannot finish.
    proxyC.resetCounts();
    proxyC.clear();
    proxyC.inject({ fault: { type: "hang" }, only: ["putPage"] });
    from = a.logs.length;
    await a.waitForLog((r) => r.msg === "replica copy started" && r.replica === idC, from);
    await proxyC.waitFor(() => proxyC.received("putPage") > 0);
    expect(await a.stop("SIGKILL")).toBe("SIGKILL");
    const logFile = join(cluster.stateDir, "dirty", VOLUME, `${idC}.${epoch}.bitmap`);
    expect(existsSync(logFile)).toBe(true);

    const pages = countPages(proxyC);
    proxyC.clear();
    agent = a = await startAgent(cluster.agentArgs());
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME);
    await a.waitForLog((r) => r.msg === "replica online" && r.replica === idC);
    pages.stop();
    // Only what was missed: the dirty regions, not the 8 MiB volume.
    expect(pages.counted.putBytes).toBe(outage.length * GRANULE);
    expect(pages.counted.clearBytes).toBe(0);
    expect(existsSync(logFile)).toBe(false);
    await cluster.untilPass(reported, (v) => v?.state === "SERVING", "a SERVING report");
    expect((await blobBytes(volume, idA)).equals(expected)).toBe(true);
    expect((await blobBytes(volume, idC)).equals(expected)).toBe(true);
    expect((await readExport()).equals(expected)).toBe(true);
  });

  it("(e) opens with an ONLINE replica's pool unreachable: serves from the other, marks it, and a full resync brings it back", async () => {
    let a = agent!;
    proxyC.inject({ fault: { type: "reset" } });
    expect(await a.stop("SIGTERM")).toBe(0);
    agent = a = await startAgent(cluster.agentArgs());
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME);
    expect(await a.waitForLog((r) => r.msg === "replica offline" && r.replica === idC)).toMatchObject({ pool: "pc" });
    // Marked on the reachable replica before the first write was taken.
    expect((await blobOf(volume, idA).getProperties()).metadata).toMatchObject({ pagediskoffline: idC });
    await writeRegions([7 * MiB]);
    const degraded = await cluster.untilPass(reported, (v) => v?.state === "DEGRADED", "a DEGRADED report");
    expect(replicaIn(degraded, idC)).toMatchObject({ state: "OFFLINE", error: expect.stringContaining("not reachable at open") });

    // Back: no dirty log covers what it missed since the open, so the resync copies all the source holds.
    const pages = countPages(proxyC);
    const from = a.logs.length;
    proxyC.clear();
    await a.waitForLog((r) => r.msg === "replica online" && r.replica === idC, from);
    pages.stop();
    expect(pages.counted.putBytes).toBe(SIZE);
    await cluster.untilPass(reported, (v) => v?.state === "SERVING", "a SERVING report");
    expect((await blobBytes(volume, idC)).equals(expected)).toBe(true);
    expect((await blobOf(volume, idA).getProperties()).metadata).not.toHaveProperty("pagediskoffline");
  });

  it("(f) finishes a rebuild interrupted by kill -9 of the agent, and retires the replica it replaces", async () => {
    let a = agent!;
    // Where (e) leaves the volume; said at once should an earlier case have failed.
    expect(await reported()).toMatchObject({ state: "SERVING" });
    await api.createPool({ name: "pd", container: "pd-disks", auth: { kind: "connectionString", connectionString: cluster.via(proxyD) } });
    let from = a.logs.length;
    proxyC.inject({ fault: { type: "reset" } });
    await writeRegions([4 * MiB + 2 * GRANULE]);
    await a.waitForLog((r) => r.msg === "replica offline" && r.replica === idC, from);

    // The upper half of the rebuild waits at pd's proxy: the agent dies with the copy half done.
    proxyD.inject({ fault: { type: "hang" }, only: ["putPage"], match: upperHalf });
    from = a.logs.length;
    await patchPool("pc", { health: "bad" });
    const started = await a.waitForLog((r) => r.msg === "replica copy started" && r.pool === "pd", from);
    expect(started).toMatchObject({ kind: "rebuild" });
    const idD = started.replica as string;
    const rebuilding = await cluster.untilPass(
      () => api.getVolume(VOLUME),
      (v) => (v.status.replicas.find((r) => r.id === idD)?.progress ?? 0) > 0,
      "rebuild progress in the record",
    );
    expect(rebuilding.status.replicas.find((r) => r.id === idD)).toMatchObject({ state: "REBUILDING", pool: "pd", replaces: idC });
    await proxyD.waitFor(() => proxyD.received("putPage") > proxyD.forwarded("putPage"));
    expect(await a.stop("SIGKILL")).toBe("SIGKILL");
    // pc answers again, so that retiring its replica can delete the blob; the annotation keeps it out of use.
    proxyC.clear();

    // Restarted: the record still asks for the rebuild, and the agent starts it over.
    const pages = countPages(proxyD);
    agent = a = await startAgent(cluster.agentArgs());
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME);
    expect(await a.waitForLog((r) => r.msg === "replica copy started" && r.replica === idD)).toMatchObject({ kind: "rebuild" });
    // The lower half, copied before the kill, is copied again before the held upper half is let through.
    await proxyD.waitFor(() => pages.counted.putBytes > SIZE / 2);
    proxyD.clear();
    await a.waitForLog((r) => r.msg === "replica online" && r.replica === idD);
    pages.stop();
    // From the start: every allocated byte of the source (all of it) once more.
    expect(pages.counted.putBytes).toBe(SIZE);
    expect(pages.counted.clearBytes).toBe(0);

    const record = await cluster.untilPass(
      () => api.getVolume(VOLUME),
      (v) => v.status.replicas.length === 2 && v.status.replicas.every((r) => r.state === "ONLINE"),
      "pc's replica retired and pd's ONLINE",
    );
    volume = record;
    expect(record.status.replicas.map((r) => r.id).sort()).toEqual([idA, idD].sort());
    await a.waitForLog((r) => r.msg === "replica removed" && r.replica === idC);
    // The record is written before the event is noted.
    const retired = await cluster.untilPass(
      () => api.listEvents({ volume: VOLUME, type: "replica-retired" }),
      (page) => page.items.some((e) => e.data?.replica === idC),
      "pc's replica-retired event",
    );
    expect(retired.items.find((e) => e.data?.replica === idC)).toMatchObject({ pool: "pc", data: { blobDeleted: true } });
    // The retired replica's blob is gone, and its container with it.
    expect(await cluster.blobOf(volume, { pool: "pc", id: idC }).exists()).toBe(false);
    expect(await blobs.getContainerClient(replicaContainerName("pc-disks", idC)).exists()).toBe(false);
    await cluster.untilPass(reported, (v) => v?.state === "SERVING" && v.replicas.length === 2, "a SERVING report with two replicas");
    expect((await blobBytes(volume, idA)).equals(expected)).toBe(true);
    expect((await blobBytes(volume, idD)).equals(expected)).toBe(true);
    expect((await readExport()).equals(expected)).toBe(true);
  });
});
