/**
 * Two paths of the replacement pass the release workflow rarely takes:
 *
 * - PENDING: a replica whose move could not start this pass (its volume
 *   went away between the pass's listing and the move) is shown PENDING,
 *   the pool stays RELEASING, and the next pass finishes the release;
 * - a removal interrupted at REMOVING (the row marked, the process gone
 *   before it deleted it) of a pool annotated `removal=ready` is finished
 *   by the sweeper; one that finds a replica on the pool (a creation
 *   racing it) puts the pool back RELEASED and tries again next pass.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Pool, PoolRelease } from "../../../contract/pool.ts";
import type { Volume } from "../../../contract/volume.ts";
import { type ControlPlane, controlPlane } from "../../../functions/control-plane.ts";
import { advanceRelease, advanceReleases } from "../../../functions/health/replacement.ts";
import { DEFAULT_SWEEP_POLICY, sweep } from "../../../functions/health/sweep.ts";
import { releasing } from "../../../functions/lifecycle/release-pool.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { NO_SECOND_LOOK } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

let fx: ControlPlaneFixture;
let cp: ControlPlane;
/** A millisecond per reading, so events are ordered. */
const EPOCH = Date.UTC(2025, 0, 1);
let nowMs = EPOCH;
const now = () => new Date(nowMs++);
const reported: unknown[] = [];

beforeAll(async () => {
  fx = await startControlPlane({ now });
  cp = controlPlane({ registry: fx.registry, now, report: (err) => reported.push(err) });
});
afterAll(() => fx?.dispose());

const getPool = async (name: string) =>
  jsonOf<Pool>(await fx.call("GET", `/api/v1/pools/${name}`), 200);

async function createVolume(name: string, poolNames: string[]): Promise<Volume> {
  return jsonOf<Volume>(
    await fx.call("POST", "/api/v1/volumes", {
      name,
      sizeBytes: 1024 * 1024,
      replicas: 1,
      pools: poolNames,
    }),
    201,
  );
}

async function eventsOf(type: string, pool: string) {
  const page = await jsonOf<{ items: Array<{ pool?: string; data?: unknown }> }>(
    await fx.call("GET", `/api/v1/events?type=${type}&limit=500`),
    200,
  );
  return page.items.filter((e) => e.pool === pool).reverse();
}

describe("a replica whose move cannot start this pass", () => {
  it("is PENDING, the pool RELEASING; the next pass finds it gone and releases the pool", async () => {
    await fx.addPool("p1", "p1-disks");
    await fx.addPool("p2", "p2-disks");
    const v = await createVolume("brief", ["p1", "p2"]);
    const old = v.status.replicas[0]!;
    expect(old.pool).toBe("p1");

    // The release recorded (the request's first write), and a pass that lists the volumes...
    const table = pools(fx.registry);
    const read = (await table.get("p1"))!;
    const marked = releasing(read.value, now())!;
    const etag = await table.replace(marked, read.etag);
    const listed = (await volumes(fx.registry).list()).map((x) => x.value);
    // ...just before the volume is deleted.
    expect((await fx.call("DELETE", "/api/v1/volumes/brief")).status).toBe(204);
    const report = { released: [], failed: [], removed: [] };
    await advanceRelease(cp, { value: marked, etag }, listed, report);

    const pending = await getPool("p1");
    expect(pending.usage).toBe("RELEASING");
    expect(pending.release).toMatchObject({
      progress: 0,
      message: "releasing: 0 of 1 replica(s) moved, 1 pending",
      counts: { PENDING: 1, MOVING: 0, WAITING: 0, MOVED: 0, FAILED: 0 },
      entries: [
        {
          volume: "brief",
          replica: old.id,
          status: "PENDING",
          progress: 0,
          message: "not started yet: no volume named brief",
        },
      ],
    } satisfies Partial<PoolRelease> & { message: string });
    expect(report).toEqual({ released: [], failed: [], removed: [] });
    expect(await eventsOf("pool-release-progress", "p1")).toEqual([]);

    expect(await advanceReleases(cp)).toEqual({ released: ["p1"], failed: [], removed: [] });
    const released = await getPool("p1");
    expect(released.usage).toBe("RELEASED");
    expect(released.release?.entries).toEqual([
      { volume: "brief", replica: old.id, status: "MOVED", progress: 100, message: "volume deleted" },
    ]);
    expect(reported).toEqual([]);
  });
});

describe("a removal interrupted at REMOVING, with removal=ready", () => {
  /** The pool as `removePool`'s first write leaves it: RELEASED, annotated, then marked REMOVING. */
  async function interruptedRemoval(name: string): Promise<void> {
    expect((await jsonOf<Pool>(await fx.call("POST", `/api/v1/pools/${name}/release`), 200)).usage).toBe(
      "RELEASED",
    );
    const table = pools(fx.registry);
    const read = (await table.get(name))!;
    await table.replace(
      { ...read.value, usage: "REMOVING", annotations: { removal: "ready" } },
      read.etag,
    );
  }

  it("is finished by the sweeper: the row deleted, the container left, and a pass after writes nothing", async () => {
    await fx.addPool("z1", "z1-disks");
    await interruptedRemoval("z1");
    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    expect(await pools(fx.registry).get("z1")).toBeUndefined();
    expect(await fx.blobs.getContainerClient("z1-disks").exists()).toBe(true);
    expect(await eventsOf("pool-removed", "z1")).toHaveLength(1);
    const settled = await fx.snapshot();
    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    expect(await fx.snapshot()).toEqual(settled);
    expect(reported).toEqual([]);
  });

  it("that finds a replica puts the pool back RELEASED, and removes it once the replica is gone", async () => {
    await fx.addPool("z2", "z2-disks");
    await fx.addPool("z3", "z3-disks");
    await interruptedRemoval("z2");
    // Setup: a replica on it after all, as a creation racing the removal leaves it until it rolls back.
    const table = volumes(fx.registry);
    const host = await createVolume("racer", ["z3"]);
    const read = (await table.get("racer"))!;
    const replica = { ...host.status.replicas[0]!, pool: "z2" };
    await table.replace(
      { ...read.value, status: { ...read.value.status, replicas: [replica] } },
      read.etag,
    );

    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    expect(await getPool("z2")).toMatchObject({ usage: "RELEASED", annotations: { removal: "ready" } });
    expect(reported).toEqual([]);
    // While the replica stays, passes leave the pool alone: no removal tried, nothing written.
    const waiting = await fx.snapshot();
    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    expect(await fx.snapshot()).toEqual(waiting);

    expect((await fx.call("DELETE", "/api/v1/volumes/racer")).status).toBe(204);
    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    expect(await pools(fx.registry).get("z2")).toBeUndefined();
    expect(reported).toEqual([]);
  });
});
