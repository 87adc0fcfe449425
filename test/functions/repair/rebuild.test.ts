/**
 * A permanent outage, as a fault proxy cutting every connection to pool
 * `pb`: probes fail, the pool goes SUSPECT then BAD, and once BAD past
 * `permanentAfterMs` the OFFLINE replica is rebuilt on `pc` (blob made and
 * leased under the volume's lease id), the old one retired when the new
 * one is ONLINE (its blob left as an orphan, the pool being dark). Attach
 * goes on without the dark pool's replica, recording it OFFLINE.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sweep } from "../../../functions/health/sweep.ts";
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

const health = async (pool: string) => (await pools(w.fx.registry).get(pool))!.value;

describe("permanent loss of a pool", () => {
  let oldId: string;
  let newId: string;

  it("pool health: GOOD, then SUSPECT on a failed probe, BAD after badAfterMs", async () => {
    const v = await w.create("v-1");
    expect(v.status.replicas.map((r) => r.pool)).toEqual(["pa", "pb"]);
    oldId = v.status.replicas[1]!.id;
    await w.attach("v-1", "n-a");
    await w.pass();
    expect((await health("pb")).health).toBe("GOOD");

    w.proxy.inject({ fault: { type: "reset" } });
    // Events of one millisecond list in any order: each change gets its own.
    w.clock.ms += 1_000;
    await w.pass();
    expect(await health("pb")).toMatchObject({ health: "SUSPECT" });
    expect((await health("pb")).healthReason).toMatch(/^probe failed: /);
    w.clock.ms += REPAIR.badAfterMs;
    await w.pass();
    expect((await health("pb")).health).toBe("BAD");
    expect((await health("pa")).health).toBe("GOOD");
    const changes = await w.fx.call("GET", "/api/v1/events?type=pool-health-changed");
    const items = ((await changes.json()) as { items: Array<{ pool: string; data: unknown }> }).items;
    expect(items.filter((e) => e.pool === "pb").map((e) => e.data)).toMatchObject([
      { from: "SUSPECT", to: "BAD" },
      { from: "GOOD", to: "SUSPECT" },
      { from: "UNKNOWN", to: "GOOD" },
    ]);
    const res = await w.fx.call("GET", "/api/v1/pools/pb");
    const view: unknown = await res.json();
    expect(res.status, JSON.stringify(view)).toBe(200);
    expect(view).toMatchObject({ health: "BAD", healthReason: expect.stringMatching(/^probes failing since/) });
  });

  it("waits while BAD for less than permanentAfterMs, then rebuilds on another pool", async () => {
    const epoch = (await w.record("v-1")).status.epoch;
    await w.report("n-a", [
      { volume: "v-1", epoch, state: "DEGRADED", replicas: [{ id: oldId, state: "OFFLINE" }] },
    ]);
    await w.pass();
    expect((await w.record("v-1")).status.replicas[1]!.message).toBe("taken offline by its writer");
    await w.pass();
    let v = await w.record("v-1");
    expect(v.status.replicas).toHaveLength(2);
    expect(v.status.replicas[1]).toMatchObject({ state: "OFFLINE", message: "waiting: pool pb is BAD" });

    w.clock.ms += REPAIR.permanentAfterMs;
    await w.pass();
    v = await w.record("v-1");
    expect(v.status.replicas).toHaveLength(3);
    const fresh = v.status.replicas[2]!;
    newId = fresh.id;
    expect(fresh).toMatchObject({ pool: "pc", state: "REBUILDING", replaces: oldId });
    expect(v.status.replicas[1]!.message).toBe(`being replaced by ${newId} on pc`);
    const blob = w.fx.blobs.getContainerClient(replicaContainerName("pc-disks", newId)).getPageBlobClient(`v-1/${newId}`);
    expect(await blob.getProperties()).toMatchObject({ leaseState: "leased", contentLength: 1024 * 1024 });
    await blob.uploadPages(Buffer.alloc(512), 0, 512, { conditions: { leaseId: v.leaseId! } });
    expect(await w.events("v-1", "replica-rebuild-started")).toHaveLength(1);

    // Desired state: ONLINE first, the copy targets after; CREATING/RETIRING never listed.
    await w.pass();
    expect((await w.record("v-1")).status.replicas).toHaveLength(3);
  });

  it("retires the old replica once the new one is ONLINE", async () => {
    const epoch = (await w.record("v-1")).status.epoch;
    await w.report("n-a", [
      {
        volume: "v-1",
        epoch,
        state: "DEGRADED",
        replicas: [
          { id: oldId, state: "OFFLINE" },
          { id: newId, state: "REBUILDING", progress: 100 },
        ],
      },
    ]);
    await w.pass();
    expect((await w.record("v-1")).status.replicas[2]).toMatchObject({ progress: 100 });
    await w.report("n-a", [
      {
        volume: "v-1",
        epoch,
        state: "SERVING",
        replicas: [
          { id: oldId, state: "OFFLINE" },
          { id: newId, state: "ONLINE" },
        ],
      },
    ]);
    await w.pass();
    const v = await w.record("v-1");
    expect(v.status.replicas.map((r) => [r.pool, r.state])).toEqual([
      ["pa", "ONLINE"],
      ["pc", "ONLINE"],
    ]);
    expect(v.status.replicas[1]!.replaces).toBeUndefined();
    const retired = await w.events("v-1", "replica-retired");
    expect(retired).toHaveLength(1);
    expect(retired[0]!.data).toMatchObject({ replica: oldId, blobDeleted: false });
    const settled = await w.fx.snapshot();
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    expect((await w.fx.snapshot()).tables).toEqual(settled.tables);
  });

  it("attach goes on without a replica on the dark pool, recorded OFFLINE", async () => {
    w.proxy.clear();
    // Back: judged GOOD again (the failures reported are older than the window), so it takes replicas.
    w.clock.ms += REPAIR.suspectWindowMs;
    await w.pass();
    expect((await health("pb")).health).toBe("GOOD");
    await w.create("v-2", { pools: ["pa", "pb"] });
    w.proxy.inject({ fault: { type: "reset" } });
    await w.attach("v-2", "n-a");
    const v = await w.record("v-2");
    expect(v.status.state).toBe("ATTACHED");
    const onPool = (pool: string) => v.status.replicas.find((r) => r.pool === pool)!;
    expect(onPool("pa").state).toBe("ONLINE");
    expect(onPool("pb")).toMatchObject({
      state: "OFFLINE",
      // An attach first admits the new writer's SAS (replica-container.ts), then takes the lease.
      message: expect.stringMatching(/^unreachable when attached: pool pb: set container policy failed/),
    });
    expect(await w.events("v-2", "replica-offline")).toHaveLength(1);
    const paId = onPool("pa").id;
    const pa = w.fx.blobs.getContainerClient(replicaContainerName("pa-disks", paId)).getPageBlobClient(`v-2/${paId}`);
    expect((await pa.getProperties()).leaseState).toBe("leased");
    w.proxy.clear();
  });
});
