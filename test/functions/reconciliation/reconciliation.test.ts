/**
 * Orphans and missing blobs over Azurite: blobs and replica containers
 * made behind the control plane's back with the Blob SDK, replica blobs
 * deleted the same way, a pool cut off by a fault proxy. Listing changes
 * no blob; deleting takes only what was named (or `all`), checked again,
 * and never a claimed blob. Blobs are named by their path in the account,
 * `<container>/<blob name>`.
 *
 * The app under test runs on a clock `shift` ahead of real time, so that
 * blobs Azurite stamped just now are `recent` (shift 0) or old (shift past
 * the 10-minute grace) at will.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { EventPage } from "../../../contract/event.ts";
import type {
  OrphanDeleteResult,
  Reconciliation,
} from "../../../contract/reconciliation.ts";
import type { Volume } from "../../../contract/volume.ts";
import { createApp } from "../../../functions/app.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { type FaultProxy, startFaultProxy } from "../../harness/fault-proxy.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

const GRACE_MS = 10 * 60_000;
const OLD = GRACE_MS + 60_000;
const MiB = 1024 * 1024;

let fx: ControlPlaneFixture;
let proxy: FaultProxy;
let shift = OLD;
const reported: unknown[] = [];
let app: ReturnType<typeof createApp>;
let kept: Volume;
let lost: Volume;

async function call(method: string, path: string, body?: unknown, auth = true): Promise<Response> {
  return app.request(`/api/v1${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      ...(auth ? { authorization: `Bearer ${fx.adminKey}` } : {}),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

const reconcile = async (query = "") =>
  jsonOf<Reconciliation>(await call("GET", `/reconciliation${query}`), 200);
const deleteOrphans = (body: unknown) => call("POST", "/reconciliation/delete-orphans", body);

const container = (pool: string) => fx.blobs.getContainerClient(`${pool}-disks`);
/** The container replica `id` of `pool` lives in. */
const replicaContainer = (pool: string, id: string) =>
  fx.blobs.getContainerClient(replicaContainerName(`${pool}-disks`, id));

/**
 * A page blob made as a replica would be, `<volume>/<id>` in replica `id`'s
 * container (made here if missing), with whatever metadata the test says.
 * Answers its path.
 */
async function replicaLike(
  pool: string,
  volume: string,
  id: string,
  metadata: Record<string, string> = {},
): Promise<string> {
  const c = replicaContainer(pool, id);
  await c.createIfNotExists();
  await c.getPageBlobClient(`${volume}/${id}`).create(MiB, { metadata });
  return `${c.containerName}/${volume}/${id}`;
}

/** Every blob of the account (every container), by path. */
async function blobPaths(): Promise<string[]> {
  const paths: string[] = [];
  for await (const c of fx.blobs.listContainers()) {
    for await (const b of fx.blobs.getContainerClient(c.name).listBlobsFlat())
      paths.push(`${c.name}/${b.name}`);
  }
  return paths.sort();
}

async function containerNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const c of fx.blobs.listContainers()) names.push(c.name);
  return names.sort();
}

async function containers() {
  return (await fx.snapshot()).containers;
}

/** Events as the app under test lists them: on its clock, which recorded them. */
async function eventsOf(type: string) {
  return (await jsonOf<EventPage>(await call("GET", `/events?type=${type}&limit=500`), 200)).items;
}

async function createVolume(name: string, body: Record<string, unknown>): Promise<Volume> {
  return jsonOf<Volume>(
    await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: MiB, ...body }),
    201,
  );
}

const replicaId = (v: Volume, pool: string) => v.status.replicas.find((r) => r.pool === pool)!.id;
/** The path of volume `v`'s replica blob on `pool`. */
const replicaPath = (v: Volume, pool: string) =>
  `${replicaContainerName(`${pool}-disks`, replicaId(v, pool))}/${v.name}/${replicaId(v, pool)}`;

beforeAll(async () => {
  fx = await startControlPlane();
  app = createApp({
    registry: fx.registry,
    now: () => new Date(Date.now() + shift),
    report: (err) => reported.push(err),
    orphanGraceMs: GRACE_MS,
  });
  for (const pool of ["pa", "pb"]) await fx.addPool(pool, `${pool}-disks`);
  proxy = await startFaultProxy(fx.azurite.blobEndpoint);
  await jsonOf(
    await fx.call("POST", "/api/v1/pools", {
      name: "pc",
      container: "pc-disks",
      auth: {
        kind: "connectionString",
        connectionString: fx.connectionString.replace(fx.azurite.blobEndpoint, proxy.blobEndpoint),
      },
    }),
    201,
  );

  kept = await createVolume("kept", { replicas: 2, pools: ["pa", "pb"] });
  lost = await createVolume("lost", { pools: ["pb"] });
  // Its container stays, empty: claimed by lost's record, so no orphan.
  await replicaContainer("pb", replicaId(lost, "pb"))
    .getPageBlobClient(`lost/${replicaId(lost, "pb")}`)
    .delete();

  // One orphan of each kind, all in pa.
  await replicaLike("pa", "ghost", "0123456789ab", {
    pagediskvolume: "ghost",
    pagediskreplica: "0123456789ab",
  });
  await replicaLike("pa", "nameonly", "aaaaaaaaaaaa");
  await replicaLike("pa", "kept", "ffffffffffff", {
    pagediskvolume: "kept",
    pagediskreplica: "ffffffffffff",
  });
  // kept's pb replica, copied into pa as it would be there: claimed in pb only.
  await replicaLike("pa", "kept", replicaId(kept, "pb"), {
    pagediskvolume: "kept",
    pagediskreplica: replicaId(kept, "pb"),
  });
  // Blobs in the pool's own container, which holds no replica: one that is
  // no pagedisk blob, and one named as a replica (the layout before
  // replica containers) whose name alone says whose it was.
  await container("pa").getBlockBlobClient("notes.txt").upload("hello", 5);
  await container("pa").getPageBlobClient("old/bbbbbbbbbbbb").create(MiB);
  // A replica container left with no blob, whose volume has no record.
  await replicaContainer("pa", "eeeeeeeeeeee").create({
    metadata: { pagediskvolume: "gone", pagediskreplica: "eeeeeeeeeeee" },
  });
  // A container of another pool, pa-disks-old, that starts with pa's prefix.
  const other = fx.blobs.getContainerClient("pa-disks-old-0123456789ab");
  await other.create();
  await other.getPageBlobClient("other/0123456789ab").create(MiB);
});
afterAll(async () => {
  await proxy?.close();
  await fx?.dispose();
});
beforeEach(() => {
  shift = OLD;
  proxy.clear();
});

describe("GET /reconciliation", () => {
  it("finds each kind of orphan and the missing blob, and changes no blob", async () => {
    const before = await containers();
    const r = await reconcile();
    expect(await containers()).toEqual(before);

    const orphans = Object.fromEntries(
      r.orphans.map((o) => [`${o.pool}:${o.name}`, [o.reason, o.volume, o.replica, o.recent]]),
    );
    const pbId = replicaId(kept, "pb");
    expect(orphans).toEqual({
      "pa:pa-disks-0123456789ab/ghost/0123456789ab": [
        "no-such-volume",
        "ghost",
        "0123456789ab",
        false,
      ],
      "pa:pa-disks-aaaaaaaaaaaa/nameonly/aaaaaaaaaaaa": [
        "no-such-volume",
        "nameonly",
        "aaaaaaaaaaaa",
        false,
      ],
      "pa:pa-disks-ffffffffffff/kept/ffffffffffff": [
        "no-such-replica",
        "kept",
        "ffffffffffff",
        false,
      ],
      [`pa:pa-disks-${pbId}/kept/${pbId}`]: ["no-such-replica", "kept", pbId, false],
      "pa:pa-disks/notes.txt": ["not-pagedisk", null, null, false],
      "pa:pa-disks/old/bbbbbbbbbbbb": ["no-such-volume", "old", "bbbbbbbbbbbb", false],
      "pa:pa-disks-eeeeeeeeeeee/": ["no-such-volume", "gone", "eeeeeeeeeeee", false],
    });
    const ghost = r.orphans.find((o) => o.name === "pa-disks-0123456789ab/ghost/0123456789ab")!;
    expect(ghost).toMatchObject({ sizeBytes: MiB, leaseState: "available" });
    expect(Date.parse(ghost.lastModified)).not.toBeNaN();
    const empty = r.orphans.find((o) => o.name === "pa-disks-eeeeeeeeeeee/")!;
    expect(empty).toMatchObject({ sizeBytes: 0, leaseState: "available" });
    expect(Date.parse(empty.lastModified)).not.toBeNaN();

    expect(r.missing).toEqual([
      {
        volume: "lost",
        replica: replicaId(lost, "pb"),
        pool: "pb",
        name: replicaPath(lost, "pb"),
        replicaState: "ONLINE",
        volumeState: "DETACHED",
        reason: "blob-not-found",
        recent: false,
      },
    ]);
    // Blobs only: pa's are kept's replica and the six orphan blobs.
    expect(r.pools).toEqual([
      { pool: "pa", reachable: true, blobs: 7 },
      { pool: "pb", reachable: true, blobs: 1 },
      { pool: "pc", reachable: true, blobs: 0 },
    ]);
    expect(r.graceSeconds).toBe(600);
    expect(reported).toEqual([]);
  });

  it("records one orphans-found event per call, and none when a pool has no orphans", async () => {
    const before = (await eventsOf("orphans-found")).length;
    await reconcile();
    const after = await eventsOf("orphans-found");
    expect(after).toHaveLength(before + 1);
    expect(after[0]!.data).toMatchObject({ count: 7, recent: 0, pools: { pa: 7 } });

    const pb = await reconcile("?pool=pb");
    expect(pb.orphans).toEqual([]);
    expect(pb.missing.map((m) => m.volume)).toEqual(["lost"]);
    expect(pb.pools.map((p) => p.pool)).toEqual(["pb"]);
    expect(await eventsOf("orphans-found")).toHaveLength(before + 1);
  });

  it("marks orphans younger than the grace period recent", async () => {
    shift = 0;
    const r = await reconcile("?pool=pa");
    expect(r.orphans.length).toBe(7);
    expect(r.orphans.every((o) => o.recent)).toBe(true);
    const fresh = await reconcile("?pool=pb");
    // The fixture's clock stamped `lost` in 2025: long past any grace.
    expect(fresh.missing[0]!.recent).toBe(false);
  });

  it("reports a replica whose pool is not registered as missing", async () => {
    const at = new Date().toISOString();
    const etag = await volumes(fx.registry).insert({
      name: "stray",
      spec: {
        sizeBytes: MiB,
        replicas: 1,
        pools: [],
        requiredNodes: [],
        preferredNodes: [],
        failover: "manual",
      },
      status: {
        state: "DETACHED",
        ownerNode: null,
        epoch: 0,
        replicas: [
          { id: "bbbbbbbbbbbb", pool: "nowhere", uri: "http://x/y", state: "ONLINE", since: at },
        ],
      },
      leaseId: null,
      createdAt: at,
      updatedAt: at,
    });
    try {
      shift = 0;
      const r = await reconcile();
      expect(r.missing.find((m) => m.volume === "stray")).toMatchObject({
        pool: "nowhere",
        name: null,
        reason: "pool-not-registered",
        recent: true,
      });
    } finally {
      await volumes(fx.registry).remove("stray", etag);
    }
  });

  it("reports a pool it cannot list as unreachable, and still scans the others", async () => {
    proxy.inject({ fault: { type: "status", status: 403, code: "AuthorizationFailure" } });
    const r = await reconcile();
    expect(r.pools.find((p) => p.pool === "pc")).toMatchObject({
      reachable: false,
      blobs: null,
      error: { status: 403, azureCode: "AuthorizationFailure" },
    });
    expect(r.pools.filter((p) => p.reachable).map((p) => p.pool)).toEqual(["pa", "pb"]);
    expect(r.orphans).toHaveLength(7);

    const one = await reconcile("?pool=pc");
    expect(one.pools).toMatchObject([{ pool: "pc", reachable: false }]);
    // A pool that cannot be checked is not cleaned either.
    expect(
      (await errorOf(await deleteOrphans({ pool: "pc", all: true }), 502)).code,
    ).toBe("StorageFailed");
  });

  it("refuses what it cannot answer", async () => {
    expect((await errorOf(await call("GET", "/reconciliation?pool=nope"), 404)).code).toBe(
      "PoolNotFound",
    );
    expect((await errorOf(await call("GET", "/reconciliation?pool=Bad_Name"), 400)).code).toBe(
      "InvalidRequest",
    );
    expect((await errorOf(await call("GET", "/reconciliation", undefined, false), 401)).code).toBe(
      "Unauthorized",
    );
  });
});

describe("POST /reconciliation/delete-orphans", () => {
  it("refuses a request naming a claimed blob, and deletes nothing of it", async () => {
    const before = await containers();
    const events = (await eventsOf("orphans-deleted")).length;
    const err = await errorOf(
      await deleteOrphans({
        pool: "pa",
        blobs: ["pa-disks-0123456789ab/ghost/0123456789ab", replicaPath(kept, "pa")],
      }),
      409,
    );
    expect(err.code).toBe("NotAnOrphan");
    expect(err.details).toEqual({
      pool: "pa",
      blobs: [{ name: replicaPath(kept, "pa"), reason: "claimed" }],
    });
    // The same blob named as it was before replica containers is no blob of the pool.
    const old = await deleteOrphans({ pool: "pa", blobs: [`kept/${replicaId(kept, "pa")}`] });
    expect((await errorOf(old, 400)).code).toBe("InvalidRequest");
    // lost's container is empty, and kept's holds its blob: both claimed.
    const lostContainer = `${replicaContainerName("pb-disks", replicaId(lost, "pb"))}/`;
    const keptContainer = `${replicaContainerName("pb-disks", replicaId(kept, "pb"))}/`;
    const containersOf = await errorOf(
      await deleteOrphans({ pool: "pb", blobs: [lostContainer, keptContainer] }),
      409,
    );
    expect(containersOf.details).toEqual({
      pool: "pb",
      blobs: [
        { name: lostContainer, reason: "claimed" },
        { name: keptContainer, reason: "claimed" },
      ],
    });
    expect(await containers()).toEqual(before);
    expect(await eventsOf("orphans-deleted")).toHaveLength(events);
  });

  it("refuses a recent orphan, and deletes it and its container once past the grace period", async () => {
    const young = await replicaLike("pa", "young", "cccccccccccc");
    shift = 0;
    const request = { pool: "pa", blobs: [young] };
    const err = await errorOf(await deleteOrphans(request), 409);
    expect(err.details).toEqual({ pool: "pa", blobs: [{ name: young, reason: "recent" }] });
    expect(await blobPaths()).toContain(young);

    shift = OLD;
    const done = await jsonOf<OrphanDeleteResult>(await deleteOrphans(request), 200);
    expect(done.results).toEqual([{ name: young, outcome: "deleted", containerDeleted: true }]);
    expect(await blobPaths()).not.toContain(young);
    expect(await containerNames()).not.toContain("pa-disks-cccccccccccc");
  });

  it("deletes a named orphan only, records it, and answers gone when asked again", async () => {
    const named = await replicaLike("pa", "named", "dddddddddddd", { pagediskvolume: "named" });
    const others = (await blobPaths()).filter((n) => n !== named);
    const done = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: [named] }),
      200,
    );
    expect(done.results).toEqual([{ name: named, outcome: "deleted", containerDeleted: true }]);
    expect(await blobPaths()).toEqual(others);
    const [event] = await eventsOf("orphans-deleted");
    expect(event).toMatchObject({
      pool: "pa",
      data: { count: 1, blobs: [named], leasesBroken: 0 },
    });

    const again = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: [named] }),
      200,
    );
    expect(again.results).toEqual([{ name: named, outcome: "gone" }]);
  });

  it("deletes a blob of the pool's own container, and leaves that container", async () => {
    const done = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: ["pa-disks/old/bbbbbbbbbbbb"] }),
      200,
    );
    expect(done.results).toEqual([{ name: "pa-disks/old/bbbbbbbbbbbb", outcome: "deleted" }]);
    expect(await blobPaths()).not.toContain("pa-disks/old/bbbbbbbbbbbb");
    expect(await blobPaths()).toContain("pa-disks/notes.txt");
  });

  it("deletes an empty replica container named `<container>/`", async () => {
    const done = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: ["pa-disks-eeeeeeeeeeee/"] }),
      200,
    );
    expect(done.results).toEqual([{ name: "pa-disks-eeeeeeeeeeee/", outcome: "deleted" }]);
    expect(await containerNames()).not.toContain("pa-disks-eeeeeeeeeeee");
    const r = await reconcile("?pool=pa");
    expect(r.orphans.map((o) => o.name)).not.toContain("pa-disks-eeeeeeeeeeee/");
  });

  it("keeps a replica container that holds another blob, or that a record claims", async () => {
    const first = await replicaLike("pa", "pair", "0000000000f1");
    const second = "pa-disks-0000000000f1/junk";
    await replicaContainer("pa", "0000000000f1").getBlockBlobClient("junk").upload("x", 1);
    const whole = await errorOf(
      await deleteOrphans({ pool: "pa", blobs: ["pa-disks-0000000000f1/"] }),
      409,
    );
    expect(whole.details).toEqual({
      pool: "pa",
      blobs: [{ name: "pa-disks-0000000000f1/", reason: "not-empty" }],
    });
    const one = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: [first] }),
      200,
    );
    expect(one.results).toEqual([{ name: first, outcome: "deleted" }]);
    expect(await containerNames()).toContain("pa-disks-0000000000f1");
    const two = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: [second] }),
      200,
    );
    expect(two.results).toEqual([{ name: second, outcome: "deleted", containerDeleted: true }]);
    expect(await containerNames()).not.toContain("pa-disks-0000000000f1");

    // A stray blob beside lost's missing replica: lost's record claims the container.
    const beside = `${replicaContainerName("pb-disks", replicaId(lost, "pb"))}/stray`;
    await replicaContainer("pb", replicaId(lost, "pb")).getBlockBlobClient("stray").upload("x", 1);
    const stray = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pb", blobs: [beside] }),
      200,
    );
    expect(stray.results).toEqual([{ name: beside, outcome: "deleted" }]);
    expect(await containerNames()).toContain(
      replicaContainerName("pb-disks", replicaId(lost, "pb")),
    );
  });

  it("deletes a leased orphan only with breakLeases", async () => {
    const path = await replicaLike("pa", "leased", "eeeeeeeeee01", { pagediskvolume: "leased" });
    await replicaContainer("pa", "eeeeeeeeee01")
      .getPageBlobClient("leased/eeeeeeeeee01")
      .getBlobLeaseClient()
      .acquireLease(-1);
    const err = await errorOf(await deleteOrphans({ pool: "pa", blobs: [path] }), 409);
    expect(err.details).toEqual({ pool: "pa", blobs: [{ name: path, reason: "leased" }] });
    expect(await blobPaths()).toContain(path);

    const done = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: [path], breakLeases: true }),
      200,
    );
    expect(done.results).toEqual([
      { name: path, outcome: "deleted", leaseBroken: true, containerDeleted: true },
    ]);
    expect(await blobPaths()).not.toContain(path);
  });

  it("with all: true takes old orphans, skips recent and leased ones, never claimed blobs", async () => {
    await fx.addPool("pd", "pd-disks");
    const alpha = await createVolume("alpha", { pools: ["pd"] });
    const x = await replicaLike("pd", "x", "111111111111");
    const y = await replicaLike("pd", "y", "222222222222");
    await replicaContainer("pd", "222222222222")
      .getPageBlobClient("y/222222222222")
      .getBlobLeaseClient()
      .acquireLease(-1);
    await replicaContainer("pd", "333333333333").create();
    const empty = "pd-disks-333333333333/";
    const pdPaths = async () => (await blobPaths()).filter((p) => p.startsWith("pd-disks"));
    const pdContainers = async () =>
      (await containerNames()).filter((c) => c.startsWith("pd-disks"));
    const alphaContainer = replicaContainerName("pd-disks", replicaId(alpha, "pd"));

    shift = 0;
    const all = { pool: "pd", all: true };
    const young = await jsonOf<OrphanDeleteResult>(await deleteOrphans(all), 200);
    expect(young.results.map((r) => [r.name, r.outcome])).toEqual([
      [x, "skipped"],
      [y, "skipped"],
      [empty, "skipped"],
    ]);
    expect(await pdPaths()).toHaveLength(3);

    shift = OLD;
    const old = await jsonOf<OrphanDeleteResult>(await deleteOrphans(all), 200);
    expect(old.results).toEqual([
      { name: y, outcome: "skipped", message: "leased: give breakLeases to delete it" },
      { name: x, outcome: "deleted", containerDeleted: true },
      { name: empty, outcome: "deleted" },
    ]);
    expect(await pdPaths()).toEqual([replicaPath(alpha, "pd"), y].sort());
    expect(await pdContainers()).toEqual(
      ["pd-disks", alphaContainer, "pd-disks-222222222222"].sort(),
    );

    const broken = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pd", all: true, breakLeases: true }),
      200,
    );
    expect(broken.results).toEqual([
      { name: y, outcome: "deleted", leaseBroken: true, containerDeleted: true },
    ]);
    expect(await pdPaths()).toEqual([replicaPath(alpha, "pd")]);
    expect(await pdContainers()).toEqual(["pd-disks", alphaContainer].sort());
  });

  it("refuses a malformed request before touching anything", async () => {
    const before = await containers();
    for (const body of [
      { pool: "pa" },
      { pool: "pa", all: true, blobs: ["pa-disks/notes.txt"] },
      { pool: "pa", blobs: [] },
      { pool: "pa", blobs: ["pa-disks/notes.txt", "pa-disks/notes.txt"] },
      { pool: "pa", all: false },
      { pool: "pa", blobs: ["pa-disks/notes.txt"], force: true },
      // Not a path: a blob name without its container.
      { pool: "pa", blobs: ["notes.txt"] },
      // Paths in containers that are not pa's.
      { pool: "pa", blobs: ["pb-disks/notes.txt"] },
      { pool: "pa", blobs: ["pa-disks-old-0123456789ab/other/0123456789ab"] },
      { pool: "pa", blobs: ["pa-disks/notes.txt", "pa-disks-0123456789abc/x"] },
      // The pool's own container is never deleted.
      { pool: "pa", blobs: ["pa-disks/"] },
    ]) {
      expect((await errorOf(await deleteOrphans(body), 400)).code, JSON.stringify(body)).toBe(
        "InvalidRequest",
      );
    }
    const foreign = await errorOf(
      await deleteOrphans({ pool: "pa", blobs: ["pb-disks/notes.txt"] }),
      400,
    );
    expect(foreign.message).toBe(
      "body.blobs.0: pb-disks/notes.txt is not in pool pa: its blobs are in pa-disks and pa-disks-<replica id>",
    );
    const bare = await errorOf(await deleteOrphans({ pool: "pa", blobs: ["notes.txt"] }), 400);
    expect(bare.message).toBe(
      "body.blobs.0: a blob is named by its path, <container>/<blob name>, as the reconciliation lists it",
    );
    expect((await errorOf(await deleteOrphans({ pool: "nope", all: true }), 404)).code).toBe(
      "PoolNotFound",
    );
    expect(
      (await errorOf(await call("POST", "/reconciliation/delete-orphans", {}, false), 401)).code,
    ).toBe("Unauthorized");
    expect(await containers()).toEqual(before);
  });
});
