/**
 * The replica count on a live volume (PATCH), `moveReplica` for the pool
 * release workflow, the `health` annotation overriding computed health,
 * and a rebuild interrupted by a crash before each of its steps, finished
 * by the next pass.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Volume } from "../../../contract/volume.ts";
import type { Faults } from "../../../functions/control-plane.ts";
import { moveReplica } from "../../../functions/health/repair.ts";
import { sweep } from "../../../functions/health/sweep.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { errorOf, jsonOf } from "../fixture.ts";
import { NO_SECOND_LOOK } from "../agents.ts";
import { POLICY, startWorld, type World } from "./world.ts";

let w: World;
beforeAll(async () => {
  w = await startWorld();
  await w.join("n-a");
  await w.pass();
});
afterAll(() => w?.dispose());

class SimulatedCrash extends Error {}

/** The writer reports every listed replica ONLINE (its copies done). */
async function allOnline(name: string): Promise<void> {
  const v = await w.record(name);
  await w.report("n-a", [
    {
      volume: name,
      epoch: v.status.epoch,
      state: "SERVING",
      replicas: v.status.replicas
        .filter((r) => r.state !== "CREATING" && r.state !== "RETIRING")
        .map((r) => ({ id: r.id, state: "ONLINE" as const })),
    },
  ]);
}

describe("PATCH replicas", () => {
  it("raised: a new replica is made on another pool and rebuilt", async () => {
    const created = await w.create("v-up", { replicas: 1 });
    await w.attach("v-up", "n-a");
    const patched = await jsonOf<Volume>(
      await w.fx.call("PATCH", "/api/v1/volumes/v-up", { replicas: 2 }),
      200,
    );
    expect(patched.spec.replicas).toBe(2);
    await w.pass();
    let v = await w.record("v-up");
    expect(v.status.replicas).toHaveLength(2);
    expect(v.status.replicas[1]!.state).toBe("REBUILDING");
    expect(v.status.replicas[1]!.pool).not.toBe(created.status.replicas[0]!.pool);
    await allOnline("v-up");
    await w.pass();
    v = await w.record("v-up");
    expect(v.status.replicas.map((r) => r.state)).toEqual(["ONLINE", "ONLINE"]);
  });

  it("lowered: one replica is retired, its blob deleted", async () => {
    await jsonOf(await w.fx.call("PATCH", "/api/v1/volumes/v-up", { replicas: 1 }), 200);
    await w.pass();
    const v = await w.record("v-up");
    expect(v.status.replicas.map((r) => r.state)).toEqual(["ONLINE"]);
    const retired = await w.events("v-up", "replica-retired");
    expect(retired).toHaveLength(1);
    expect(retired[0]!.data).toMatchObject({ blobDeleted: true });
  });

  it("raised beyond the pools the volume may use: InsufficientPools, nothing changed", async () => {
    await w.create("v-lim", { pools: ["pa", "pb"] });
    const before = await w.fx.snapshot();
    const err = await errorOf(
      await w.fx.call("PATCH", "/api/v1/volumes/v-lim", { replicas: 3 }),
      409,
    );
    expect(err.code).toBe("InsufficientPools");
    expect(await w.fx.snapshot()).toEqual(before);
    expect(
      (await errorOf(await w.fx.call("PATCH", "/api/v1/volumes/v-lim", { replicas: 4 }), 400))
        .code,
    ).toBe("InvalidRequest");
  });
});

describe("moveReplica", () => {
  it("starts one replacement however often it is asked, and the move ends with the old replica gone", async () => {
    const old = (await w.record("v-up")).status.replicas[0]!;
    const first = await moveReplica(w.cp(), "v-up", old.id, "pool released");
    const again = await moveReplica(w.cp(), "v-up", old.id, "pool released");
    expect(again.status.replicas).toEqual(first.status.replicas);
    expect(first.status.replicas).toHaveLength(2);
    expect(first.status.replicas[1]).toMatchObject({ state: "CREATING", replaces: old.id });
    await w.pass();
    expect((await w.record("v-up")).status.replicas[1]!.state).toBe("REBUILDING");
    await allOnline("v-up");
    await w.pass();
    const v = await w.record("v-up");
    expect(v.status.replicas.map((r) => r.id)).toEqual([first.status.replicas[1]!.id]);
    await expect(moveReplica(w.cp(), "nope", old.id, "x")).rejects.toMatchObject({
      code: "VolumeNotFound",
    });
  });
});

describe("health annotation", () => {
  it("overrides the computed health, and its removal gives it back", async () => {
    const table = pools(w.fx.registry);
    const read = (await table.get("pc"))!;
    await table.replace({ ...read.value, annotations: { health: "bad" } }, read.etag);
    await w.pass();
    const pc = (await table.get("pc"))!.value;
    expect(pc.health).toBe("BAD");
    expect(pc.healthReason).toMatch(/^annotated health=bad \(computed: GOOD/);
    const again = (await table.get("pc"))!;
    await table.replace({ ...again.value, annotations: {} }, again.etag);
    await w.pass();
    expect((await table.get("pc"))!.value.health).toBe("GOOD");
  });
});

describe("a rebuild interrupted by a crash", () => {
  const STEPS = ["repair-record", "create-replica-blob", "repair-lease", "note"];

  it.each(STEPS)("before its first %s step is finished by the next pass", async (step) => {
    const name = `v-crash-${step}`;
    await w.create(name, { replicas: 1 });
    await w.attach(name, "n-a");
    await jsonOf(await w.fx.call("PATCH", `/api/v1/volumes/${name}`, { replicas: 2 }), 200);
    let crashed = false;
    const faults: Faults = {
      beforeStep: (at) => {
        if (crashed || at.startsWith(step)) {
          crashed = true;
          throw new SimulatedCrash(at);
        }
      },
    };
    await sweep(w.cp(faults), POLICY, NO_SECOND_LOOK);
    expect(crashed).toBe(true);
    w.reported.length = 0;
    await w.pass();
    const v = await w.record(name);
    expect(v.status.replicas.map((r) => r.state)).toEqual(["ONLINE", "REBUILDING"]);
    const fresh = v.status.replicas[1]!;
    const blob = w.fx.blobs
      .getContainerClient(replicaContainerName(`${fresh.pool}-disks`, fresh.id))
      .getPageBlobClient(`${name}/${fresh.id}`);
    expect((await blob.getProperties()).leaseState).toBe("leased");
    const settled = await w.fx.snapshot();
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    expect((await w.fx.snapshot()).tables).toEqual(settled.tables);
    expect(w.reported).toEqual([]);
  });
});
