/**
 * Failover end to end, with real parts only: Azurite (blob + table), the
 * control plane in process on a real port with its sweeper running at the
 * default pace (a pass every 7.5 s, SUSPECT after 4 s, LOST after 8 s), and
 * agents as child processes (`pagedisk agent run`, beating every 2 s to the
 * liveness table, which they reach through a fault proxy of ours).
 * Data goes in and comes out through NBD clients nobody here wrote
 * (nbdcopy), through kernel devices (nbdfuse + loop), and through the raw
 * client where the exact request order matters. Every wait is on something
 * that happens (an agent's log records, a beat that did not land and a
 * report recorded among them; a sweeper pass; a tool's exit), never on a
 * timer.
 *
 * 1. A node cut off from the control plane (its API and its liveness
 *    table), still running and still serving: fenced and failed over to
 *    another node, which serves every byte the first one acknowledged; the
 *    cut-off node's next write gets EIO and lands nowhere.
 * 2. `kill -9` of an agent with a kernel device: served again on restart,
 *    with no admin action, on a new device with the same data.
 * 3. The kernel's replay of requests in flight on a dead connection:
 *    harmless while the node holds the lease, refused once it is fenced.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event } from "../../contract/event.ts";
import type { Volume } from "../../contract/volume.ts";
import { ApiClient, type EventFilter } from "../../agent/control/api-client.ts";
import { exportUri, fusePaths } from "../../agent/host/fuse-loop-driver.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { nodes } from "../../functions/registry/nodes.ts";
import { replicaContainerName } from "../../functions/storage/replica-container.ts";
import { type AgentProcess, startAgent } from "../control/agent-process.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";
import { runTool } from "../harness/tools.ts";
import { readDevice, writeDevice } from "../host/host-fixture.ts";
import { ensureBundleBuilt } from "../infra/installer.ts";
import { pattern } from "../nbd/fixtures.ts";
import { CMD, ERR, FLAG, RawClient } from "../nbd/raw-client.ts";
import { type Partition, startPartition } from "./partition.ts";

const MiB = 1024 * 1024;
const NODE_A = "node-a";
const NODE_B = "node-b";
const NODE_C = "node-c";

let azurite: Azurite;
let cp: LocalControlPlane;
let api: ApiClient;
let blobs: BlobServiceClient;
let dir: string;
let joinToken: string;
let link: Partition;
/** In front of the liveness table: what cuts a node's heartbeats. */
let liveness: FaultProxy;
/** Reaches the control plane through `link` only. */
let agentA: AgentProcess | undefined;
let agentB: AgentProcess | undefined;
/** --kernel fuse, for the kill -9 case. */
let agentC: AgentProcess | undefined;

beforeAll(async () => {
  await ensureBundleBuilt();
  dir = await mkdtemp(join(tmpdir(), "pagedisk-e2e-"));
  azurite = await startAzurite({ table: true });
  liveness = await startFaultProxy(azurite.tableEndpoint!);
  cp = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {
      PAGEDISK_LIVENESS_CONNECTION_STRING: azurite.connectionString.replace(
        /TableEndpoint=[^;]+/,
        `TableEndpoint=${liveness.origin}${new URL(azurite.tableEndpoint!).pathname}`,
      ),
    },
    port: 0,
    stateDir: join(dir, "cp"),
    log: () => {},
  });
  api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
  blobs = BlobServiceClient.fromConnectionString(azurite.connectionString);
  await api.createPool({
    name: "pa",
    container: "pa-disks",
    auth: { kind: "connectionString", connectionString: azurite.connectionString },
  });
  joinToken = (await api.createToken()).token;
  link = await startPartition(Number(new URL(cp.apiUrl).port));
  [agentA, agentB] = await Promise.all([
    startAgent(agentArgs(NODE_A, link.origin), { PAGEDISK_JOIN_TOKEN: joinToken }),
    startAgent(agentArgs(NODE_B), { PAGEDISK_JOIN_TOKEN: joinToken }),
  ]);
  await Promise.all([agentA.waitForReport(() => true), agentB.waitForReport(() => true)]);
});

afterAll(async () => {
  if (agentC && agentC.proc.exitCode === null && agentC.proc.signalCode === null) {
    // A failed kernel case must not leave its loop device and FUSE mount behind.
    const from = agentC.logs.length;
    const detached = await api.detachVolume("vol-crash").then(
      () => true,
      () => false,
    );
    if (detached) await agentC.waitForLog((r) => r.msg === "volume detached", from).catch(() => {});
    await agentC.stop("SIGTERM");
  }
  await Promise.all([agentA?.stop("SIGKILL"), agentB?.stop("SIGKILL")]);
  await link?.close();
  await cp?.close();
  await liveness?.close();
  await azurite?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function origin(): string {
  return new URL(cp.apiUrl).origin;
}

function stateDirOf(node: string): string {
  return join(dir, node);
}

/** Default heartbeat interval: the failover measured here is the one users get. */
function agentArgs(node: string, controlPlane = origin(), kernel = "none"): string[] {
  return ["--control-plane", controlPlane, "--state-dir", stateDirOf(node), "--name", node, "--kernel", kernel];
}

function socketOf(node: string, volume: string): string {
  return join(stateDirOf(node), "sockets", `${volume}.sock`);
}

function blobOf(v: Volume) {
  const r = v.status.replicas[0]!;
  return blobs
    .getContainerClient(replicaContainerName(`${r.pool}-disks`, r.id))
    .getPageBlobClient(`${v.name}/${r.id}`);
}

/** Attach through the API and wait until the agent says it serves the volume. */
async function attachAndServe(agent: AgentProcess, volume: string, node: string) {
  const from = agent.logs.length;
  const attachment = await api.attachVolume(volume, node);
  const serving = await agent.waitForLog((r) => r.msg === "volume serving" && r.volume === volume, from);
  return { attachment, serving };
}

let copies = 0;

/** Every byte of an export, as nbdcopy reads it. */
async function readExport(socket: string, volume: string, size: number): Promise<Buffer> {
  const file = join(dir, `read-${++copies}.img`);
  // nbdcopy writes into an existing file; holes it skips stay zeros.
  await writeFile(file, "");
  await truncate(file, size);
  await runTool("nbdcopy", [exportUri(socket, volume), file]);
  const data = await readFile(file);
  await rm(file);
  return data;
}

/** A connection in transmission, as the kernel holds one. */
async function connection(socket: string, volume: string): Promise<RawClient> {
  const client = await RawClient.connect(socket);
  await client.handshake(volume);
  return client;
}

/**
 * Events matching `query` once `done` holds. The sweeper records an event
 * just after the step it describes, so they are read again after each of
 * its passes (two at most) rather than after a sleep.
 */
async function eventsOnce(query: EventFilter, done: (items: Event[]) => boolean): Promise<Event[]> {
  for (let pass = 0; pass < 2; pass++) {
    const { items } = await api.listEvents(query);
    if (done(items)) return items;
    await cp.nextPass();
  }
  return (await api.listEvents(query)).items;
}

describe("failover of a node cut off from the control plane", () => {
  const SIZE = 8 * MiB;

  it("moves the volume to another node that serves every acknowledged byte, and fences the cut-off writer", async () => {
    const a = agentA!;
    const b = agentB!;
    await api.createVolume({
      name: "vol-move",
      sizeBytes: SIZE,
      requiredNodes: [NODE_A, NODE_B],
      failover: "automatic",
    });
    await attachAndServe(a, "vol-move", NODE_A);

    // What A acknowledged and flushed: the whole volume, random bytes (nbdcopy exits 0 only then).
    const written = randomBytes(SIZE);
    const source = join(dir, "vol-move.img");
    await writeFile(source, written);
    await runTool("nbdcopy", ["--flush", source, exportUri(socketOf(NODE_A, "vol-move"), "vol-move")]);
    // Open now, as the kernel keeps its connections through whatever happens next.
    const kept = await connection(socketOf(NODE_A, "vol-move"), "vol-move");

    let fromA = a.logs.length;
    const fromB = b.logs.length;
    // A loses the API and its heartbeats; its storage traffic to the pool is untouched.
    const keyA = (await nodes(cp.runtime.cp.registry).get(NODE_A))!.value.livenessKey!;
    link.cut();
    liveness.inject({ fault: { type: "reset" }, match: (r) => r.method === "MERGE" && r.url.pathname.includes(keyA) });
    await a.waitForLog((r) => r.msg?.startsWith("heartbeat did not land") === true, fromA);

    // The sweeper: A SUSPECT, LOST, the volume fenced (epoch 2) and attached to B (epoch 3).
    const serving = await b.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-move", fromB);
    await b.waitForReport((vols) => vols.includes("vol-move:3:SERVING"), fromB);
    const moved = await api.getVolume("vol-move");
    expect(moved.status).toMatchObject({ state: "ATTACHED", ownerNode: NODE_B, epoch: 3 });
    expect(moved.status.failoverPending ?? false).toBe(false);
    const nodeA = await api.getNode(NODE_A);
    expect(nodeA.state).toBe("LOST");
    // A never heard of any of it: it still serves, with the lease it was given.
    expect(a.logs.slice(fromA).some((r) => r.msg === "volume detached" || r.msg === "volume failed")).toBe(false);

    const servingAt = Date.parse(serving.time as string);
    const lastBeat = Date.parse(nodeA.lastHeartbeatAt!);
    console.log(
      `failover: node-b serving ${servingAt - lastBeat} ms after node-a's last heartbeat ` +
        `(${servingAt - link.cutAt!} ms after the cut)`,
    );

    expect((await readExport(socketOf(NODE_B, "vol-move"), "vol-move", SIZE)).equals(written)).toBe(true);

    // A writes again on its old connection: the storage service refuses it.
    fromA = a.logs.length;
    const late = await kept.request({
      type: CMD.WRITE,
      handle: 1n,
      offset: 0,
      flags: FLAG.FUA,
      payload: Buffer.alloc(64 * 1024, 0xee),
    });
    kept.close();
    expect(late.error).toBe(ERR.EIO);
    const failed = await a.waitForLog((r) => r.msg === "volume failed" && r.volume === "vol-move", fromA);
    // Refused at the storage service: by its SAS, if bound to the policy the fence removed
    // (forbidden), or, if A still held the short unbound SAS of a lease younger than 35 s
    // (desired-state.ts), by its old lease (lease-lost).
    expect(failed).toMatchObject({ epoch: 1 });
    expect(["forbidden", "lease-lost"]).toContain(failed.reason);
    expect((await readExport(socketOf(NODE_B, "vol-move"), "vol-move", SIZE)).equals(written)).toBe(true);

    const events = await eventsOnce({ volume: "vol-move" }, (items) =>
      items.some((e) => e.type === "volume-failed-over"),
    );
    expect(events).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ type: "volume-fenced", node: NODE_A, data: { epoch: 2 } }),
        expect.objectContaining({ type: "volume-failed-over", node: NODE_B }),
      ]),
    );
    const lost = await api.listEvents({ node: NODE_A, type: "node-lost" });
    expect(lost.items).toHaveLength(1);
  });
});

describe("kill -9 of an agent with a kernel device (--kernel fuse)", () => {
  it("serves again after a restart with no admin action, on a new device with the same data", async () => {
    const size = 4 * MiB;
    const args = agentArgs(NODE_C, origin(), "fuse");
    agentC = await startAgent(args, { PAGEDISK_JOIN_TOKEN: joinToken });
    const v = await api.createVolume({ name: "vol-crash", sizeBytes: size, requiredNodes: [NODE_C] });
    const first = (await attachAndServe(agentC, "vol-crash", NODE_C)).serving.device as string;
    expect(first).toMatch(/^\/dev\/loop\d+$/);

    const data = randomBytes(MiB);
    await writeDevice(first, MiB, data);
    expect(await agentC.stop("SIGKILL")).toBe("SIGKILL");

    agentC = await startAgent(args);
    const serving = await agentC.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-crash");
    const device = serving.device as string;
    expect(device).toMatch(/^\/dev\/loop\d+$/);
    await agentC.waitForReport((vols) => vols.includes("vol-crash:1:SERVING"));
    // Same attachment: no new epoch, nothing done through the API.
    expect((await api.getVolume("vol-crash")).status).toMatchObject({ state: "ATTACHED", ownerNode: NODE_C, epoch: 1 });
    // The earlier run's loop device was replaced, not leaked.
    const { file } = fusePaths(stateDirOf(NODE_C), "vol-crash");
    expect(await loopsOf(file)).toEqual([device]);

    // Drop whatever the block layer cached, so the bytes come from the new binding.
    await runTool("blockdev", ["--flushbufs", device]);
    expect((await readDevice(device, MiB, MiB)).equals(data)).toBe(true);
    const after = pattern(64 * 1024, 9);
    await writeDevice(device, 3 * MiB, after);
    expect(await blobOf(v).downloadToBuffer(3 * MiB, after.length)).toEqual(after);

    const from = agentC.logs.length;
    await api.detachVolume("vol-crash");
    await agentC.waitForLog((r) => r.msg === "volume detached" && r.volume === "vol-crash", from);
    expect(await loopsOf(file)).toEqual([]);
    expect(await agentC.stop("SIGTERM")).toBe(0);
  });
});

describe("requests the kernel replays on a new connection", () => {
  const OFFSET = 8192;
  const written = pattern(64 * 1024, 3);

  it("a write replayed after its connection died is harmless; after fencing it fails and changes nothing", async () => {
    const b = agentB!;
    const v = await api.createVolume({ name: "vol-replay", sizeBytes: MiB, requiredNodes: [NODE_B] });
    const { attachment } = await attachAndServe(b, "vol-replay", NODE_B);
    const socket = socketOf(NODE_B, "vol-replay");

    // Connection 1 dies with the write sent and its reply never read.
    const first = await connection(socket, "vol-replay");
    first.send({ type: CMD.WRITE, handle: 1n, offset: OFFSET, payload: written });
    if (first.socket.writableLength > 0) await once(first.socket, "drain");
    first.close();

    const second = await connection(socket, "vol-replay");
    const replayed = await second.request({ type: CMD.WRITE, handle: 1n, offset: OFFSET, payload: written });
    expect(replayed.error).toBe(0);
    const back = await second.request({ type: CMD.READ, handle: 2n, offset: OFFSET, length: written.length });
    expect(back).toMatchObject({ error: 0 });
    expect(back.data!.equals(written)).toBe(true);
    expect(await blobOf(v).downloadToBuffer(OFFSET, written.length)).toEqual(written);

    // What the control plane's failover does to the blob's lease: break it, take a new one. (It
    // also revokes the old SAS; an honest agent must be stopped by the lease alone.)
    const kept = await connection(socket, "vol-replay");
    await blobOf(v).getBlobLeaseClient(attachment.leaseId).breakLease(0);
    await blobOf(v).getBlobLeaseClient().acquireLease(-1);

    const from = b.logs.length;
    const fenced = await kept.request({
      type: CMD.WRITE,
      handle: 7n,
      offset: OFFSET,
      payload: pattern(written.length, 4),
    });
    kept.close();
    second.close();
    expect(fenced.error).toBe(ERR.EIO);
    await b.waitForLog((r) => r.msg === "volume failed" && r.volume === "vol-replay", from);
    await b.waitForReport((vols) => vols.includes(`vol-replay:${attachment.epoch}:FAILED`), from);
    expect(await blobOf(v).downloadToBuffer(OFFSET, written.length)).toEqual(written);
    // The volume B still serves is untouched by its neighbour's failure.
    await b.waitForReport((vols) => vols.includes("vol-move:3:SERVING"), from);
  });
});

/** Loop devices backed by `file` (`losetup -j`). */
async function loopsOf(file: string): Promise<string[]> {
  const { stdout } = await runTool("losetup", ["-j", file]);
  return stdout
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => line.slice(0, line.indexOf(":")));
}
