/**
 * Pool replacement over Azurite: the usage workflow IN_USE -> RELEASING ->
 * RELEASED -> REMOVING -> REMOVED, FAILED and back IN_USE, driven through
 * the API (`POST .../release`, `PATCH .../annotations`) and the sweeper's
 * passes. A real move needs its writer to copy: the writer's side is
 * played by reports through the API, as its agent sends them
 * (../agents.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { EventPage } from "../../../contract/event.ts";
import type { ReplicaReport } from "../../../contract/node.ts";
import { MAX_RELEASE_ENTRIES, type Pool } from "../../../contract/pool.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { type ControlPlane, controlPlane } from "../../../functions/control-plane.ts";
import {
  advanceRelease,
  advanceReleases,
  WAITING_MESSAGE,
} from "../../../functions/health/replacement.ts";
import { DEFAULT_SWEEP_POLICY, sweep } from "../../../functions/health/sweep.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { type VolumeRecord, volumes } from "../../../functions/registry/volumes.ts";
import { agentNodes, NO_SECOND_LOOK } from "../agents.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

let fx: ControlPlaneFixture;
let cp: ControlPlane;
/**
 * The app's clock: a millisecond per reading, so events are ordered and no
 * node goes silent behind a test's back.
 */
const EPOCH = Date.UTC(2025, 0, 1);
let nowMs = EPOCH;
const now = () => new Date(nowMs++);
const reported: unknown[] = [];
let token: IssuedToken;
const agents = agentNodes(
  () => fx,
  () => token.token,
);

beforeAll(async () => {
  fx = await startControlPlane({ now });
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  cp = controlPlane({
    registry: fx.registry,
    now,
    report: (err) => reported.push(err),
  });
});
afterAll(() => fx?.dispose());

const release = (pool: string) => fx.call("POST", `/api/v1/pools/${pool}/release`);
const annotate = (pool: string, body: unknown) =>
  fx.call("PATCH", `/api/v1/pools/${pool}/annotations`, body);
const getPool = async (name: string) =>
  jsonOf<Pool>(await fx.call("GET", `/api/v1/pools/${name}`), 200);
const getVolume = async (name: string) =>
  jsonOf<Volume>(await fx.call("GET", `/api/v1/volumes/${name}`), 200);

async function createVolume(name: string, poolNames: string[], replicas = 1): Promise<Volume> {
  return jsonOf<Volume>(
    await fx.call("POST", "/api/v1/volumes", {
      name,
      sizeBytes: 1024 * 1024,
      replicas,
      pools: poolNames,
    }),
    201,
  );
}

/** Events of one type about `pool`, oldest first. */
async function eventsOf(type: string, pool: string) {
  const page = await jsonOf<EventPage>(
    await fx.call("GET", `/api/v1/events?type=${type}&limit=500`),
    200,
  );
  return page.items.filter((e) => e.pool === pool).reverse();
}

describe("the release of an empty pool", () => {
  it("is RELEASED at once, changes nothing when asked again, and goes back IN_USE with action=add", async () => {
    await fx.addPool("empty-1", "empty-1-disks");
    const released = await jsonOf<Pool>(await release("empty-1"), 200);
    expect(released.usage).toBe("RELEASED");
    expect(released.release).toMatchObject({
      progress: 100,
      counts: { PENDING: 0, MOVING: 0, WAITING: 0, MOVED: 0, FAILED: 0 },
      entries: [],
      omitted: 0,
      message: "released: 0 of 0 replica(s) moved",
    });
    expect(released.release?.finishedAt).toBeDefined();
    const changes = await eventsOf("pool-usage-changed", "empty-1");
    expect(changes.map((e) => e.data)).toEqual([
      { from: "IN_USE", to: "RELEASING" },
      { from: "RELEASING", to: "RELEASED" },
    ]);

    const before = await fx.snapshot();
    expect(await jsonOf<Pool>(await release("empty-1"), 200)).toEqual(released);
    expect(await fx.snapshot()).toEqual(before);

    const back = await jsonOf<Pool>(await annotate("empty-1", { action: "add" }), 200);
    expect(back.usage).toBe("IN_USE");
    // `action` is acted on, not kept.
    expect(back.annotations).toEqual({});
    expect(back.release?.message).toMatch(/^stopped: back IN_USE \(was RELEASED\)/);
    expect(back.release?.stoppedAt).toBeDefined();
    expect((await eventsOf("pool-annotated", "empty-1")).map((e) => e.message)).toEqual([
      "pool empty-1 annotated: action=add",
    ]);
    // IN_USE already: nothing to do, nothing written.
    const still = await fx.snapshot();
    expect((await jsonOf<Pool>(await annotate("empty-1", { action: "add" }), 200)).usage).toBe(
      "IN_USE",
    );
    expect(await fx.snapshot()).toEqual(still);
  });

  it("with removal=ready set beforehand, is removed as soon as it is RELEASED; its container stays", async () => {
    await fx.addPool("empty-2", "empty-2-disks");
    const ready = await jsonOf<Pool>(await annotate("empty-2", { removal: "ready" }), 200);
    expect(ready).toMatchObject({ usage: "IN_USE", annotations: { removal: "ready" } });

    const gone = await jsonOf<Pool>(await release("empty-2"), 200);
    expect(gone.usage).toBe("REMOVED");
    expect((await errorOf(await fx.call("GET", "/api/v1/pools/empty-2"), 404)).code).toBe(
      "PoolNotFound",
    );
    expect(await fx.blobs.getContainerClient("empty-2-disks").exists()).toBe(true);
    expect(await eventsOf("pool-removed", "empty-2")).toHaveLength(1);
  });

  it("removal=ready on a RELEASED pool removes it in the same request", async () => {
    await fx.addPool("empty-3", "empty-3-disks");
    expect((await jsonOf<Pool>(await release("empty-3"), 200)).usage).toBe("RELEASED");
    const gone = await jsonOf<Pool>(await annotate("empty-3", { removal: "ready" }), 200);
    expect(gone).toMatchObject({ usage: "REMOVED", annotations: { removal: "ready" } });
    expect(await pools(fx.registry).get("empty-3")).toBeUndefined();
  });
});

describe("annotations", () => {
  it("are kept until removed with null; setting the same value again writes nothing", async () => {
    await fx.addPool("noted", "noted-disks");
    const bad = await jsonOf<Pool>(await annotate("noted", { health: "bad" }), 200);
    expect(bad.annotations).toEqual({ health: "bad" });
    expect(bad.usage).toBe("IN_USE");
    const both = await jsonOf<Pool>(
      await annotate("noted", { health: "suspect", removal: "ready" }),
      200,
    );
    expect(both.annotations).toEqual({ health: "suspect", removal: "ready" });

    const before = await fx.snapshot();
    await jsonOf(await annotate("noted", { health: "suspect" }), 200);
    expect(await fx.snapshot()).toEqual(before);

    const cleared = await jsonOf<Pool>(await annotate("noted", { health: null }), 200);
    expect(cleared.annotations).toEqual({ removal: "ready" });
    expect((await eventsOf("pool-annotated", "noted")).map((e) => e.message)).toEqual([
      "pool noted annotated: health=bad",
      "pool noted annotated: removal=ready health=suspect",
      "pool noted annotated: health-",
    ]);
  });

  it("refuse bad input with a 4xx error body and change nothing", async () => {
    await fx.addPool("strict", "strict-disks");
    const table = pools(fx.registry);
    const cases: Array<[string, () => Promise<Response>, number, string, RegExp?]> = [
      ["empty", () => annotate("strict", {}), 400, "InvalidRequest", /nothing to change/],
      ["bad removal", () => annotate("strict", { removal: "now" }), 400, "InvalidRequest"],
      ["bad health", () => annotate("strict", { health: "good" }), 400, "InvalidRequest"],
      ["bad action", () => annotate("strict", { action: "delete" }), 400, "InvalidRequest"],
      ["null action", () => annotate("strict", { action: null }), 400, "InvalidRequest"],
      ["unknown key", () => annotate("strict", { color: "red" }), 400, "InvalidRequest"],
      ["not JSON", () => annotate("strict", "{"), 400, "InvalidJson"],
      ["no pool", () => annotate("nowhere", { removal: "ready" }), 404, "PoolNotFound"],
      ["no pool to release", () => release("nowhere"), 404, "PoolNotFound"],
      ["bad name", () => release("Not_A_Pool"), 400, "InvalidRequest", /^path\.name: /],
      [
        "no admin key",
        async () =>
          fx.app.request("/api/v1/pools/strict/release", {
            method: "POST",
            headers: { authorization: "Bearer nope" },
          }),
        401,
        "Unauthorized",
      ],
    ];
    for (const [what, send, status, code, message] of cases) {
      const before = await fx.snapshot();
      const err = await errorOf(await send(), status);
      expect({ what, code: err.code }).toEqual({ what, code });
      if (message) expect(err.message).toMatch(message);
      expect(await fx.snapshot()).toEqual(before);
    }

    // A pool being removed can be neither released nor put back in use.
    const read = (await table.get("strict"))!;
    await table.replace({ ...read.value, usage: "REMOVING" }, read.etag);
    for (const send of [
      () => annotate("strict", { action: "remove" }),
      () => annotate("strict", { action: "add", removal: "ready" }),
      () => release("strict"),
    ]) {
      const before = await fx.snapshot();
      const err = await errorOf(await send(), 409);
      expect(err.code).toBe("Conflict");
      expect(err.message).toMatch(/pool usage is REMOVING and cannot become/);
      expect(await fx.snapshot()).toEqual(before);
    }
    expect(reported).toEqual([]);
  });
});

describe("the release of a pool holding replicas", () => {
  it("fails when no pool can take a replica, and is retried with action=remove once one can", async () => {
    await fx.addPool("f1", "f1-disks");
    await fx.addPool("f2", "f2-disks");
    // f2 released first (it is empty): it takes no replicas, and the volume may use only f1 and f2.
    expect((await jsonOf<Pool>(await release("f2"), 200)).usage).toBe("RELEASED");
    const v = await createVolume("pinned", ["f1", "f2"]);
    const old = v.status.replicas[0]!;
    expect(old.pool).toBe("f1");

    const failed = await jsonOf<Pool>(await release("f1"), 200);
    expect(failed.usage).toBe("FAILED");
    expect(failed.release?.entries).toEqual([
      {
        volume: "pinned",
        replica: old.id,
        status: "FAILED",
        progress: 0,
        message: expect.stringMatching(/^no pool can take it: /),
      },
    ]);
    expect(failed.release?.message).toBe("release failed: 0 of 1 replica(s) moved, 1 cannot be moved");
    expect((await eventsOf("pool-release-progress", "f1")).map((e) => e.data)).toEqual([
      { replica: old.id, status: "FAILED", progress: 0 },
    ]);
    expect((await getVolume("pinned")).status.replicas).toEqual(v.status.replicas);

    // A FAILED pool is left alone by the sweeper: nothing is retried behind the operator's back.
    const before = await fx.snapshot();
    expect(await advanceReleases(cp)).toEqual({ released: [], failed: [], removed: [] });
    expect(await fx.snapshot()).toEqual(before);

    expect((await jsonOf<Pool>(await annotate("f2", { action: "add" }), 200)).usage).toBe("IN_USE");
    const retried = await jsonOf<Pool>(await annotate("f1", { action: "remove" }), 200);
    expect(retried.usage).toBe("RELEASING");
    expect(retried.release?.startedAt).toBe(failed.release?.startedAt);
    // Detached: the repair copies it server-side (repair-detached.ts); here it is ordered only.
    expect(retried.release?.entries).toEqual([
      {
        volume: "pinned",
        replica: old.id,
        status: "MOVING",
        progress: 0,
        message: expect.stringMatching(/^creating its blob, to replace /),
      },
    ]);
    const replicas = (await getVolume("pinned")).status.replicas;
    expect(replicas).toHaveLength(2);
    expect(replicas[1]).toMatchObject({ pool: "f2", state: "CREATING", replaces: old.id });

    // A pass right after finds nothing new: one replacement, no write.
    const settled = await fx.snapshot();
    await advanceReleases(cp);
    expect(await fx.snapshot()).toEqual(settled);

    // While the volume's writer changes (an attach under way), the move waits, and says so.
    const table = volumes(fx.registry);
    const detached = (await table.get("pinned"))!;
    const attaching = { ...detached.value, status: { ...detached.value.status, state: "ATTACHING" as const } };
    const etag = await table.replace(attaching, detached.etag);
    await advanceReleases(cp);
    expect((await getPool("f1")).release?.entries).toEqual([
      { volume: "pinned", replica: old.id, status: "WAITING", progress: 0, message: WAITING_MESSAGE },
    ]);
    expect((await getPool("f1")).release?.counts).toMatchObject({ MOVING: 0, WAITING: 1 });
    await table.replace(detached.value, etag);

    // The volume goes away: nothing is left on f1, which is RELEASED.
    expect((await fx.call("DELETE", "/api/v1/volumes/pinned")).status).toBe(204);
    expect(await advanceReleases(cp)).toEqual({ released: ["f1"], failed: [], removed: [] });
    const done = await getPool("f1");
    expect(done.usage).toBe("RELEASED");
    expect(done.release?.entries).toEqual([
      { volume: "pinned", replica: old.id, status: "MOVED", progress: 100, message: "volume deleted" },
    ]);
    expect(done.release?.progress).toBe(100);
    expect(reported).toEqual([]);
  });

  it("fails for a volume whose only ONLINE copy is on a BAD pool, and action=add puts the pool back", async () => {
    await fx.addPool("g1", "g1-disks");
    await fx.addPool("g2", "g2-disks");
    const v = await createVolume("lonely", ["g1", "g2"]);
    expect(v.status.replicas[0]!.pool).toBe("g1");
    await jsonOf(await annotate("g1", { health: "bad" }), 200);

    const failed = await jsonOf<Pool>(await annotate("g1", { action: "remove" }), 200);
    expect(failed.usage).toBe("FAILED");
    expect(failed.release?.entries[0]).toMatchObject({
      status: "FAILED",
      message: "pool g1 is BAD and the volume has no other ONLINE replica to rebuild from",
    });
    expect((await getVolume("lonely")).status.replicas).toHaveLength(1);

    const back = await jsonOf<Pool>(await annotate("g1", { action: "add" }), 200);
    expect(back).toMatchObject({ usage: "IN_USE", annotations: { health: "bad" } });
    expect((await eventsOf("pool-usage-changed", "g1")).map((e) => e.data)).toEqual([
      { from: "IN_USE", to: "RELEASING" },
      { from: "RELEASING", to: "FAILED" },
      { from: "FAILED", to: "IN_USE" },
    ]);
    expect((await fx.call("DELETE", "/api/v1/volumes/lonely")).status).toBe(204);
  });

  it("is stopped by action=add while RELEASING: back IN_USE, the pool left alone by later passes", async () => {
    await fx.addPool("c1", "c1-disks");
    await fx.addPool("c2", "c2-disks");
    const v = await createVolume("kept", ["c1", "c2"]);
    const started = await jsonOf<Pool>(await release("c1"), 200);
    expect(started.usage).toBe("RELEASING");
    expect(started.release?.counts).toMatchObject({ MOVING: 1, WAITING: 0 });

    const back = await jsonOf<Pool>(await annotate("c1", { action: "add" }), 200);
    expect(back.usage).toBe("IN_USE");
    expect(back.release?.message).toMatch(/^stopped: back IN_USE \(was RELEASING\)/);
    const before = await fx.snapshot();
    await advanceReleases(cp);
    expect(await fx.snapshot()).toEqual(before);
    // The replacement already ordered is not thrown away: the repair finishes or retires it.
    const replicas = (await getVolume("kept")).status.replicas;
    expect(replicas.map((r) => r.replaces ?? null)).toEqual([null, v.status.replicas[0]!.id]);
    expect((await fx.call("DELETE", "/api/v1/volumes/kept")).status).toBe(204);
  });

  it("moves a replica its writer holds OFFLINE when another is ONLINE; fails one with no ONLINE copy at all", async () => {
    await fx.addPool("h1", "h1-disks");
    await fx.addPool("h2", "h2-disks");
    await fx.addPool("h3", "h3-disks");
    const pair = await createVolume("pair", ["h1", "h2", "h3"], 2);
    const single = await createVolume("single", ["h1", "h2"]);
    expect(pair.status.replicas.map((r) => r.pool)).toContain("h1");
    expect(single.status.replicas[0]!.pool).toBe("h1");
    // Setup: the replicas on h1 as a writer's report would have left them.
    const table = volumes(fx.registry);
    for (const name of ["pair", "single"]) {
      const read = (await table.get(name))!;
      const replicas = read.value.status.replicas.map((r) =>
        r.pool === "h1" ? { ...r, state: "OFFLINE" as const } : r,
      );
      await table.replace(
        { ...read.value, status: { ...read.value.status, replicas } },
        read.etag,
      );
    }

    const failed = await jsonOf<Pool>(await release("h1"), 200);
    expect(failed.usage).toBe("FAILED");
    const byVolume = new Map(failed.release!.entries.map((e) => [e.volume, e]));
    expect(byVolume.get("pair")).toMatchObject({ status: "MOVING" });
    expect(byVolume.get("single")).toMatchObject({
      status: "FAILED",
      message: "no ONLINE replica to copy from: this one is OFFLINE and the volume has no other",
    });
    expect(failed.release?.counts).toEqual({
      PENDING: 0,
      MOVING: 1,
      WAITING: 0,
      MOVED: 0,
      FAILED: 1,
    });
    const moved = (await getVolume("pair")).status.replicas.find((r) => r.replaces);
    expect(moved?.pool).toBe("h3");
    expect((await getVolume("single")).status.replicas).toHaveLength(1);
    for (const name of ["pair", "single"])
      expect((await fx.call("DELETE", `/api/v1/volumes/${name}`)).status).toBe(204);
  });

  it("a removal interrupted at REMOVING that finds a replica puts the pool back where it was", async () => {
    const table = pools(fx.registry);
    const released = {
      startedAt: new Date(EPOCH).toISOString(),
      finishedAt: new Date(EPOCH).toISOString(),
      progress: 100,
      message: "released: 0 of 0 replica(s) moved",
      counts: { PENDING: 0, MOVING: 0, WAITING: 0, MOVED: 0, FAILED: 0 },
      entries: [],
      omitted: 0,
    };
    const cases = [
      // Released, then marked REMOVING by removal=ready: back to RELEASED.
      ["r1", released, "RELEASED"],
      // A release stopped by action=add, then a DELETE: back IN_USE.
      ["r2", { ...released, stoppedAt: new Date(EPOCH).toISOString() }, "IN_USE"],
    ] as const;
    for (const [name, release, usage] of cases) {
      await fx.addPool(name, `${name}-disks`);
      // Setup: a replica on it after all (as a creation racing the removal would leave).
      await createVolume(`late-${name}`, [name]);
      const read = (await table.get(name))!;
      await table.replace({ ...read.value, usage: "REMOVING", release }, read.etag);

      const err = await errorOf(await fx.call("DELETE", `/api/v1/pools/${name}`), 409);
      expect(err.code).toBe("PoolInUse");
      expect((await getPool(name)).usage).toBe(usage);
      expect((await fx.call("DELETE", `/api/v1/volumes/late-${name}`)).status).toBe(204);
    }
  });

  it("moves an attached volume's replica as its writer copies: MOVING with progress, then MOVED, RELEASED and removed", async () => {
    await fx.addPool("m1", "m1-disks");
    await fx.addPool("m2", "m2-disks");
    const v = await createVolume("mover", ["m1", "m2"]);
    const old = v.status.replicas[0]!;
    expect(old.pool).toBe("m1");
    await agents.join("vm-writer");
    const attached = await jsonOf<Attachment>(
      await fx.call("POST", "/api/v1/volumes/mover/attach", { node: "vm-writer" }),
      200,
    );
    const copied = (replicas: ReplicaReport[]) =>
      agents.report("vm-writer", {
        volumes: [{ volume: "mover", epoch: attached.epoch, state: "SERVING", replicas }],
      });

    const started = await jsonOf<Pool>(await release("m1"), 200);
    expect(started.usage).toBe("RELEASING");
    expect(started.release?.entries).toEqual([
      expect.objectContaining({ volume: "mover", replica: old.id, status: "MOVING", progress: 0 }),
    ]);

    // The repair makes the new replica's blob: REBUILDING on m2, for the writer to fill.
    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    const rebuilding = (await getVolume("mover")).status.replicas.find((r) => r.replaces === old.id)!;
    expect(rebuilding).toMatchObject({ pool: "m2", state: "REBUILDING" });

    await copied([
      { id: old.id, state: "ONLINE" },
      { id: rebuilding.id, state: "REBUILDING", progress: 40.5 },
    ]);
    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    const moving = await getPool("m1");
    expect(moving.release?.entries[0]).toMatchObject({ status: "MOVING", progress: 40 });
    expect(moving.release?.progress).toBe(40);
    expect(moving.release?.message).toBe("releasing: 0 of 1 replica(s) moved, 1 moving");

    await copied([
      { id: old.id, state: "ONLINE" },
      { id: rebuilding.id, state: "ONLINE" },
    ]);
    await sweep(cp, DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    const released = await getPool("m1");
    expect(released.usage).toBe("RELEASED");
    expect(released.release?.entries).toEqual([
      expect.objectContaining({ volume: "mover", replica: old.id, status: "MOVED", progress: 100 }),
    ]);
    expect((await getVolume("mover")).status.replicas.map((r) => [r.pool, r.state])).toEqual([
      ["m2", "ONLINE"],
    ]);
    expect((await eventsOf("pool-release-progress", "m1")).map((e) => e.data)).toEqual([
      { replica: old.id, status: "MOVED", progress: 100 },
    ]);

    const removed = await jsonOf<Pool>(await annotate("m1", { removal: "ready" }), 200);
    expect(removed.usage).toBe("REMOVED");
    expect(await pools(fx.registry).get("m1")).toBeUndefined();
    expect(await fx.blobs.getContainerClient("m1-disks").exists()).toBe(true);
    expect(reported).toEqual([]);
  });
});

describe("the release record", () => {
  it("keeps the replicas still on the pool first, at most MAX_RELEASE_ENTRIES, in one row, counting them all", async () => {
    await fx.addPool("wide", "wide-disks");
    const table = pools(fx.registry);
    const longName = (i: number) => `${"v".repeat(59)}${String(i).padStart(4, "0")}`;
    const replicaId = (i: number) => i.toString(16).padStart(12, "0");
    const failedBefore = Array.from({ length: MAX_RELEASE_ENTRIES }, (_, i) => ({
      volume: longName(i),
      replica: replicaId(i),
      status: "FAILED" as const,
      progress: 0,
      message: `no pool can take it: ${"x".repeat(120)}`,
    }));
    const read = (await table.get("wide"))!;
    await table.replace(
      {
        ...read.value,
        usage: "FAILED",
        release: {
          startedAt: new Date(EPOCH).toISOString(),
          progress: 0,
          message: "release failed",
          counts: { PENDING: 0, MOVING: 0, WAITING: 0, MOVED: 0, FAILED: 100 },
          entries: failedBefore,
          omitted: 0,
        },
      },
      read.etag,
    );
    // The volumes as a pass reads them: 130 replicas on the pool, none being replaced.
    const at = new Date(EPOCH).toISOString();
    const all: VolumeRecord[] = Array.from({ length: 130 }, (_, i) => ({
      name: longName(i),
      spec: {
        sizeBytes: 4096,
        replicas: 1,
        pools: [],
        requiredNodes: [],
        preferredNodes: [],
        failover: "automatic",
      },
      status: {
        state: "DETACHED",
        ownerNode: null,
        epoch: 0,
        replicas: [
          {
            id: replicaId(i),
            pool: "wide",
            uri: `${fx.azurite.blobEndpoint}/wide-disks/${longName(i)}/${replicaId(i)}`,
            state: "ONLINE",
          },
        ],
      },
      leaseId: null,
      createdAt: at,
      updatedAt: at,
    }));

    const report = { released: [], failed: [], removed: [] };
    const written = await advanceRelease(cp, (await table.get("wide"))!, all, report);
    const release = written!.value.release!;
    expect(release.counts).toEqual({ PENDING: 30, MOVING: 0, WAITING: 0, MOVED: 0, FAILED: 100 });
    expect(release.entries).toHaveLength(MAX_RELEASE_ENTRIES);
    expect(release.omitted).toBe(30);
    expect(new Set(release.entries.map((e) => e.status))).toEqual(new Set(["FAILED"]));
    expect(Math.max(...release.entries.map((e) => e.message!.length))).toBe(120);
    // The row holds it all, and reads back as written.
    expect((await getPool("wide")).release).toEqual(release);
  });
});
