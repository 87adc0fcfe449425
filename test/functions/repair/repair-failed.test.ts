/**
 * A volume left with no ONLINE replica to copy from: its OFFLINE replicas
 * say so, and the volume gets one `replica-repair-failed` event, not one
 * per replica nor one per pass; nothing is resynced, rebuilt or added,
 * whatever the pools' health, and later passes write nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_SOURCE } from "../../../functions/health/repair-plan.ts";
import { sweep } from "../../../functions/health/sweep.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { NO_SECOND_LOOK } from "../agents.ts";
import { POLICY, REPAIR, startWorld, type World } from "./world.ts";

let w: World;
beforeAll(async () => {
  w = await startWorld();
  await w.join("n-a");
});
afterAll(() => w?.dispose());

describe("no ONLINE replica left to copy from", () => {
  it("gets replica-repair-failed once, and a message on each replica", async () => {
    const created = await w.create("v-x");
    await w.attach("v-x", "n-a");
    await w.pass();
    const epoch = (await w.record("v-x")).status.epoch;
    // Its writer reports every replica OFFLINE (each pool failed it in turn).
    await w.report("n-a", [
      {
        volume: "v-x",
        epoch,
        state: "DEGRADED",
        replicas: created.status.replicas.map((r) => ({
          id: r.id,
          state: "OFFLINE" as const,
          error: `pool ${r.pool}: Put Page failed (no response)`,
        })),
      },
    ]);
    await w.pass();
    let v = await w.record("v-x");
    expect(v.status.replicas.map((r) => r.state)).toEqual(["OFFLINE", "OFFLINE"]);
    expect(await w.events("v-x", "replica-offline")).toHaveLength(2);

    await w.pass();
    v = await w.record("v-x");
    expect(v.status.replicas.map((r) => [r.state, r.message])).toEqual([
      ["OFFLINE", NO_SOURCE],
      ["OFFLINE", NO_SOURCE],
    ]);
    const failed = await w.events("v-x", "replica-repair-failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({
      volume: "v-x",
      node: "n-a",
      data: { replicas: created.status.replicas.map((r) => r.id) },
    });
    expect(failed[0]!.message).toContain(NO_SOURCE);
  });

  it("stays as it is on later passes: no event, no write, nothing ordered", async () => {
    // Long enough for both pools to be GOOD again, and for pb, annotated bad, to count as lost.
    const table = pools(w.fx.registry);
    const pb = (await table.get("pb"))!;
    await table.replace({ ...pb.value, annotations: { health: "bad" } }, pb.etag);
    w.clock.ms += REPAIR.suspectWindowMs + REPAIR.permanentAfterMs;
    await w.pass();
    expect((await table.get("pa"))!.value.health).toBe("GOOD");
    expect((await table.get("pb"))!.value.health).toBe("BAD");

    const settled = await w.fx.snapshot();
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    expect(await w.fx.snapshot()).toEqual(settled);
    const v = await w.record("v-x");
    expect(v.status.replicas.map((r) => [r.state, r.message])).toEqual([
      ["OFFLINE", NO_SOURCE],
      ["OFFLINE", NO_SOURCE],
    ]);
    expect(await w.events("v-x", "replica-repair-failed")).toHaveLength(1);
    expect(await w.events("v-x", "replica-resync-started")).toHaveLength(0);
    expect(await w.events("v-x", "replica-rebuild-started")).toHaveLength(0);
    expect(w.reported).toEqual([]);
  });
});
