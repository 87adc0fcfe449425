/**
 * A temporary outage: the writer reports a replica OFFLINE, the control
 * plane records it once however many report it, waits while the pool is
 * SUSPECT, then leases the replica under the volume's lease id and orders a
 * resync; progress and the end of the copy reach the record from the
 * writer's heartbeats, and a second pass finds nothing to do.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VolumeReport } from "../../../contract/node.ts";
import { sweep } from "../../../functions/health/sweep.ts";
import { generationOf, nodes } from "../../../functions/registry/nodes.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { NO_SECOND_LOOK } from "../agents.ts";
import { POLICY, REPAIR, startWorld, type World } from "./world.ts";

let w: World;
beforeAll(async () => {
  w = await startWorld();
  await w.join("n-a");
});
afterAll(() => w?.dispose());

async function generation(node: string): Promise<number> {
  return generationOf((await nodes(w.fx.registry).get(node))!.value);
}

describe("temporary outage of one replica's pool", () => {
  let offlineId: string;
  let epoch: number;
  const reportOf = (state: VolumeReport["replicas"][number]["state"], extra = {}) => ({
    volume: "v-1",
    epoch,
    state: "DEGRADED" as const,
    replicas: [{ id: offlineId, state, ...extra }],
  });

  it("records the writer's OFFLINE report once, from many reporters", async () => {
    const created = await w.create("v-1");
    expect(created.status.replicas.map((r) => r.pool)).toEqual(["pa", "pb"]);
    offlineId = created.status.replicas[1]!.id;
    await w.attach("v-1", "n-a");
    epoch = (await w.record("v-1")).status.epoch;
    await w.pass();
    expect((await pools(w.fx.registry).get("pb"))!.value.health).toBe("GOOD");

    // Several heartbeats and two sweepers racing on the same failure.
    await w.report("n-a", [reportOf("OFFLINE", { error: "pool pb: Put Page failed (no response)" })]);
    await w.report("n-a", [reportOf("OFFLINE", { error: "pool pb: Put Page failed (no response)" })]);
    await Promise.all([sweep(w.cp(), POLICY, NO_SECOND_LOOK), sweep(w.cp(), POLICY, NO_SECOND_LOOK)]);
    await w.pass();

    const r = (await w.record("v-1")).status.replicas.find((x) => x.id === offlineId)!;
    expect(r).toMatchObject({ state: "OFFLINE", pool: "pb" });
    expect(await w.events("v-1", "replica-offline")).toHaveLength(1);
    // The failure was reported within the window: SUSPECT, no resync yet.
    expect((await pools(w.fx.registry).get("pb"))!.value.health).toBe("SUSPECT");
    expect(r.message).toBe("waiting: pool pb is SUSPECT");
    expect(await w.events("v-1", "replica-resync-started")).toHaveLength(0);
  });

  it("orders a resync once the pool is GOOD again: leased under the volume's lease, generation bumped", async () => {
    const before = await generation("n-a");
    w.clock.ms += REPAIR.suspectWindowMs + 1_000;
    await Promise.all([sweep(w.cp(), POLICY, NO_SECOND_LOOK), sweep(w.cp(), POLICY, NO_SECOND_LOOK)]);
    await w.pass();
    const v = await w.record("v-1");
    expect((await pools(w.fx.registry).get("pb"))!.value.health).toBe("GOOD");
    expect(v.status.replicas.find((x) => x.id === offlineId)).toMatchObject({
      state: "RESYNCING",
      message: "resync ordered",
    });
    expect(await w.events("v-1", "replica-resync-started")).toHaveLength(1);
    expect(await generation("n-a")).toBeGreaterThan(before);
    const blob = w.fx.blobs
      .getContainerClient(replicaContainerName("pb-disks", offlineId))
      .getPageBlobClient(`v-1/${offlineId}`);
    const props = await blob.getProperties();
    expect(props.leaseState).toBe("leased");
    // Our lease id is the volume's: a write under it goes through.
    await blob.uploadPages(Buffer.alloc(512), 0, 512, { conditions: { leaseId: v.leaseId! } });
  });

  it("does not take a stale OFFLINE report for a failed copy", async () => {
    // The writer's heartbeat still shows OFFLINE right after the order: not a failure of the copy.
    await w.pass();
    expect((await w.record("v-1")).status.replicas.find((x) => x.id === offlineId)!.state).toBe(
      "RESYNCING",
    );
  });

  it("copies progress when it moves by a percent, and records ONLINE when the copy is done", async () => {
    await w.report("n-a", [reportOf("RESYNCING", { progress: 42.5, copiedBytes: 425, totalBytes: 1000 })]);
    await w.pass();
    let r = (await w.record("v-1")).status.replicas.find((x) => x.id === offlineId)!;
    expect(r).toMatchObject({ state: "RESYNCING", progress: 42, message: "resync: 42% (425 of 1000 bytes)" });
    const unchanged = await w.fx.snapshot();
    await w.report("n-a", [reportOf("RESYNCING", { progress: 42.9 })]);
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    expect((await w.fx.snapshot()).tables["volumes"]).toEqual(unchanged.tables["volumes"]);

    await w.report("n-a", [reportOf("ONLINE")]);
    await w.pass();
    r = (await w.record("v-1")).status.replicas.find((x) => x.id === offlineId)!;
    expect(r.state).toBe("ONLINE");
    expect(r.progress).toBeUndefined();
    expect(await w.events("v-1", "replica-online")).toHaveLength(1);

    // Nothing left to do: a further pass writes nothing.
    const settled = await w.fx.snapshot();
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    expect(await w.fx.snapshot()).toEqual(settled);
    expect(w.reported).toEqual([]);
  });

  it("a copy reported failed, late enough to know of the order, goes back OFFLINE", async () => {
    await w.report("n-a", [reportOf("OFFLINE", { error: "Put Page failed" })]);
    await w.pass();
    w.clock.ms += REPAIR.suspectWindowMs + 1_000;
    await w.pass();
    expect((await w.record("v-1")).status.replicas[1]!.state).toBe("RESYNCING");
    w.clock.ms += REPAIR.reportGraceMs + 1_000;
    await w.report("n-a", [reportOf("OFFLINE", { error: "Put Page failed again" })]);
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    expect((await w.record("v-1")).status.replicas[1]).toMatchObject({
      state: "OFFLINE",
      message: "resync failed: Put Page failed again",
    });
  });
});
