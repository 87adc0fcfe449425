/**
 * A detach under writes in flight, end to end: Azurite, the control plane
 * in process, `pagedisk agent run` as a child process, a two-replica volume
 * with pool pb behind a fault proxy. The proxy holds pb's Put Pages, so
 * writes the client sent are in flight on one replica when the detach
 * comes. The control plane must not drop the leases until the agent has
 * drained the export: the held writes then land on both replicas, the
 * client gets every reply without error, no `replicas-diverged` is
 * reported, and the replicas are byte-equal without any repair.
 *
 * Every wait is on something a process says (log records, reports,
 * proxy requests), never on a timer.
 */
import { randomBytes } from "node:crypto";
import { readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Volume } from "../../contract/volume.ts";
import { exportUri } from "../../agent/host/fuse-loop-driver.ts";
import { type AgentProcess, startAgent } from "../control/agent-process.ts";
import type { FaultProxy } from "../harness/fault-proxy.ts";
import { runTool } from "../harness/tools.ts";
import { CMD, RawClient, type Reply } from "../nbd/raw-client.ts";
import { type ReplicaCluster, startReplicaCluster } from "./replica-cluster.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 4 * MiB;
const NODE = "node-d";
const VOLUME = "vol-d";
/** Writes in flight at the detach: 64 KiB each, 512 KiB apart so none are merged. */
const WRITES = 4;
const STRIDE = 512 * KiB;
const LENGTH = 64 * KiB;

let cluster: ReplicaCluster;
let proxyB: FaultProxy;
let agent: AgentProcess | undefined;

beforeAll(async () => {
  cluster = await startReplicaCluster("pagedisk-detach-", NODE, 1);
  proxyB = cluster.proxies[0]!;
  agent = await startAgent(cluster.agentArgs(), { PAGEDISK_JOIN_TOKEN: cluster.joinToken });
  await agent.waitForReport(() => true);
});

afterAll(async () => {
  await agent?.stop("SIGKILL");
  await cluster?.close();
});

function blobOf(v: Volume, replicaId: string) {
  const r = v.status.replicas.find((x) => x.id === replicaId)!;
  return cluster.blobOf(v, r);
}

describe("detach of a volume with writes in flight", () => {
  it("waits for the agent to drain: the held writes land on both replicas, no error, no divergence", async () => {
    const { api } = cluster;
    const a = agent!;
    const volume = await api.createVolume({ name: VOLUME, sizeBytes: SIZE, replicas: 2 });
    expect(volume.status.replicas.map((r) => r.pool).sort()).toEqual(["pa", "pb"]);
    let from = a.logs.length;
    await api.attachVolume(VOLUME, NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME, from);
    // A report that says it is SERVING (and the generation applied, which reports carry).
    await a.waitForReport((vs) => vs.some((v) => v.startsWith(`${VOLUME}:`) && v.endsWith(":SERVING")), from);

    const client = await RawClient.connect(join(cluster.stateDir, "sockets", `${VOLUME}.sock`));
    await client.handshake(VOLUME);
    const expected = Buffer.alloc(SIZE);
    // pb's Put Pages are held at its proxy: the writes reach pa and wait on pb.
    proxyB.inject({ fault: { type: "hang" }, only: ["putPage"] });
    const before = proxyB.received("putPage");
    for (let i = 0; i < WRITES; i++) {
      const data = randomBytes(LENGTH);
      data.copy(expected, i * STRIDE);
      client.send({ type: CMD.WRITE, handle: BigInt(i + 1), offset: i * STRIDE, payload: data });
    }
    await proxyB.waitFor(() => proxyB.received("putPage") - before >= WRITES);

    from = a.logs.length;
    const detaching = api.detachVolume(VOLUME);
    // The agent was told: it stopped taking requests and waits for the held writes to end
    // (held a few hundred ms here, well inside the 5 s after which pb would go OFFLINE).
    await a.waitForLog((r) => r.volume === VOLUME && r.msg === "volume draining", from);
    const mid = await api.getVolume(VOLUME);
    expect(mid.status.state).toBe("DETACHING");
    // The leases stand while the writes are held: they will land.
    for (const r of mid.status.replicas) {
      expect((await blobOf(mid, r.id).getProperties()).leaseState).toBe("leased");
    }

    proxyB.clear();
    const replies: Reply[] = [];
    for (let i = 0; i < WRITES; i++) replies.push(await client.reply());
    expect(replies.map((r) => r.error)).toEqual(Array(WRITES).fill(0));
    client.close();

    const detached = await detaching;
    expect(detached.status).toMatchObject({ state: "DETACHED", ownerNode: null });
    const events = await api.listEvents({ volume: VOLUME });
    const detachedEvent = events.items.find((e) => e.type === "volume-detached");
    expect(detachedEvent?.data).toMatchObject({ drained: true });
    expect(events.items.filter((e) => e.type === "replicas-diverged")).toEqual([]);

    // No repair needed: both replicas hold every acknowledged write, and are ONLINE.
    expect(detached.status.replicas.map((r) => r.state)).toEqual(["ONLINE", "ONLINE"]);
    for (const r of detached.status.replicas) {
      expect((await blobOf(detached, r.id).downloadToBuffer(0, SIZE)).equals(expected)).toBe(true);
      expect((await blobOf(detached, r.id).getProperties()).leaseState).toBe("available");
    }
    // And a client nobody here wrote reads it back the same, once attached again.
    from = a.logs.length;
    await api.attachVolume(VOLUME, NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME, from);
    const file = join(cluster.dir, "read.img");
    await writeFile(file, "");
    await truncate(file, SIZE);
    await runTool("nbdcopy", [exportUri(join(cluster.stateDir, "sockets", `${VOLUME}.sock`), VOLUME), file]);
    expect((await readFile(file)).equals(expected)).toBe(true);
  });
});
