/**
 * A DETACHED volume is repaired by its writer once attached: until then
 * its replicas that are not ONLINE wait with a message saying so, RETIRING
 * ones (which need no writer) are dropped, and nothing else happens, not
 * even on a pool that would call for a rebuild. After the attach the
 * repair goes on as for any attached volume.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Replica } from "../../../contract/volume.ts";
import { DETACHED_WAIT } from "../../../functions/health/repair.ts";
import { sweep } from "../../../functions/health/sweep.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { jsonOf } from "../fixture.ts";
import { POLICY, REPAIR, startWorld, type World } from "./world.ts";

let w: World;
beforeAll(async () => {
  w = await startWorld();
  await w.join("n-a");
});
afterAll(() => w?.dispose());

class SimulatedCrash extends Error {}

const blobOf = (r: Replica) =>
  w.fx.blobs.getContainerClient(`${r.pool}-disks`).getPageBlobClient(`v-d/${r.id}`);

describe("the replicas of a detached volume", () => {
  let waiting: Replica;
  let retiring: Replica;

  it("wait with the DETACHED message; a RETIRING one is dropped and its blob deleted", async () => {
    const created = await w.create("v-d", { replicas: 3 });
    expect(created.status.replicas.map((r) => r.pool)).toEqual(["pa", "pb", "pc"]);
    await w.attach("v-d", "n-a");
    await w.pass();
    const epoch = (await w.record("v-d")).status.epoch;
    await w.report("n-a", [
      {
        volume: "v-d",
        epoch,
        state: "DEGRADED",
        replicas: created.status.replicas
          .filter((r) => r.pool !== "pa")
          .map((r) => ({ id: r.id, state: "OFFLINE" as const })),
      },
    ]);
    await w.pass();
    // The count lowered; the pass that retires one replica dies before deleting its blob.
    await jsonOf(await w.fx.call("PATCH", "/api/v1/volumes/v-d", { replicas: 2 }), 200);
    await w.pass({
      beforeStep: (at) => {
        if (at.startsWith("delete-replica-blob")) throw new SimulatedCrash(at);
      },
    });
    expect(w.reported.splice(0)).toEqual([expect.any(SimulatedCrash)]);
    let v = await w.record("v-d");
    expect(v.status.replicas.map((r) => r.state).sort()).toEqual(["OFFLINE", "ONLINE", "RETIRING"]);
    retiring = v.status.replicas.find((r) => r.state === "RETIRING")!;
    waiting = v.status.replicas.find((r) => r.state === "OFFLINE")!;
    expect(await blobOf(retiring).exists()).toBe(true);

    await jsonOf(await w.fx.call("POST", "/api/v1/volumes/v-d/detach", {}), 200);
    await w.pass();
    v = await w.record("v-d");
    expect(v.status.state).toBe("DETACHED");
    expect(v.status.replicas.map((r) => [r.id, r.state, r.message])).toEqual(
      created.status.replicas
        .filter((r) => r.id !== retiring.id)
        .map((r) =>
          r.id === waiting.id ? [r.id, "OFFLINE", DETACHED_WAIT] : [r.id, "ONLINE", undefined],
        ),
    );
    expect(await blobOf(retiring).exists()).toBe(false);
    const retired = await w.events("v-d", "replica-retired");
    expect(retired.map((e) => e.data)).toEqual([{ replica: retiring.id, blobDeleted: true }]);
  });

  it("nothing else happens until the volume is attached, whatever its pools' health", async () => {
    // Its pool annotated bad: an attached volume would have it rebuilt elsewhere.
    const table = pools(w.fx.registry);
    const read = (await table.get(waiting.pool))!;
    await table.replace({ ...read.value, annotations: { health: "bad" } }, read.etag);
    w.clock.ms += REPAIR.suspectWindowMs + REPAIR.permanentAfterMs;
    await w.pass();
    expect((await table.get(waiting.pool))!.value.health).toBe("BAD");
    const settled = await w.fx.snapshot();
    await sweep(w.cp(), POLICY);
    expect(await w.fx.snapshot()).toEqual(settled);
    const v = await w.record("v-d");
    expect(v.status.replicas.find((r) => r.id === waiting.id)).toMatchObject({
      state: "OFFLINE",
      message: DETACHED_WAIT,
    });
    expect(v.status.replicas).toHaveLength(2);
    expect((await blobOf(waiting).getProperties()).leaseState).toBe("available");

    // Back to GOOD: still nothing, the volume being detached.
    const again = (await table.get(waiting.pool))!;
    await table.replace({ ...again.value, annotations: {} }, again.etag);
    w.clock.ms += REPAIR.suspectWindowMs;
    await w.pass();
    expect((await table.get(waiting.pool))!.value.health).toBe("GOOD");
    expect((await w.record("v-d")).status.replicas).toEqual(v.status.replicas);
    expect(await w.events("v-d", "replica-resync-started")).toHaveLength(0);
    expect(await w.events("v-d", "replica-rebuild-started")).toHaveLength(0);
  });

  it("once attached, the repair proceeds: the waiting replica is leased and resynced", async () => {
    await w.attach("v-d", "n-a");
    await w.pass();
    const v = await w.record("v-d");
    expect(v.status.replicas.find((r) => r.id === waiting.id)).toMatchObject({
      state: "RESYNCING",
      message: "resync ordered",
    });
    expect(await w.events("v-d", "replica-resync-started")).toHaveLength(1);
    await blobOf(waiting).uploadPages(Buffer.alloc(512), 0, 512, {
      conditions: { leaseId: v.leaseId! },
    });
    expect(w.reported).toEqual([]);
  });
});
