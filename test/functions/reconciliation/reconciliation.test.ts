/**
 * Orphans and missing blobs over Azurite: blobs made behind the control
 * plane's back with the Blob SDK, replica blobs deleted the same way, a
 * pool cut off by a fault proxy. Listing changes no blob; deleting takes
 * only what was named (or `all`), checked again, and never a claimed blob.
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

/** A page blob made as a replica would be, with whatever metadata the test says. */
async function pageBlob(pool: string, name: string, metadata: Record<string, string> = {}) {
  const blob = container(pool).getPageBlobClient(name);
  await blob.create(MiB, { metadata });
  return blob;
}

async function blobNames(pool: string): Promise<string[]> {
  const names: string[] = [];
  for await (const b of container(pool).listBlobsFlat()) names.push(b.name);
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

const replicaName = (v: Volume, pool: string) =>
  `${v.name}/${v.status.replicas.find((r) => r.pool === pool)!.id}`;

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
  await container("pb").getPageBlobClient(replicaName(lost, "pb")).delete();

  // One orphan of each kind, all in pa.
  await pageBlob("pa", "ghost/0123456789ab", {
    pagediskvolume: "ghost",
    pagediskreplica: "0123456789ab",
  });
  await pageBlob("pa", "nameonly/aaaaaaaaaaaa");
  await pageBlob("pa", "kept/ffffffffffff", {
    pagediskvolume: "kept",
    pagediskreplica: "ffffffffffff",
  });
  // kept's pb replica, copied under the same name into pa: claimed in pb only.
  await pageBlob("pa", replicaName(kept, "pb"), {
    pagediskvolume: "kept",
    pagediskreplica: kept.status.replicas.find((r) => r.pool === "pb")!.id,
  });
  await container("pa").getBlockBlobClient("notes.txt").upload("hello", 5);
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
    const pbId = kept.status.replicas.find((x) => x.pool === "pb")!.id;
    expect(orphans).toEqual({
      "pa:ghost/0123456789ab": ["no-such-volume", "ghost", "0123456789ab", false],
      "pa:nameonly/aaaaaaaaaaaa": ["no-such-volume", "nameonly", "aaaaaaaaaaaa", false],
      "pa:kept/ffffffffffff": ["no-such-replica", "kept", "ffffffffffff", false],
      [`pa:kept/${pbId}`]: ["no-such-replica", "kept", pbId, false],
      "pa:notes.txt": ["not-pagedisk", null, null, false],
    });
    const ghost = r.orphans.find((o) => o.name === "ghost/0123456789ab")!;
    expect(ghost).toMatchObject({ sizeBytes: MiB, leaseState: "available" });
    expect(Date.parse(ghost.lastModified)).not.toBeNaN();

    expect(r.missing).toEqual([
      {
        volume: "lost",
        replica: lost.status.replicas[0]!.id,
        pool: "pb",
        name: replicaName(lost, "pb"),
        replicaState: "ONLINE",
        volumeState: "DETACHED",
        reason: "blob-not-found",
        recent: false,
      },
    ]);
    expect(r.pools).toEqual([
      { pool: "pa", reachable: true, blobs: 6 },
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
    expect(after[0]!.data).toMatchObject({ count: 5, recent: 0, pools: { pa: 5 } });

    const pb = await reconcile("?pool=pb");
    expect(pb.orphans).toEqual([]);
    expect(pb.missing.map((m) => m.volume)).toEqual(["lost"]);
    expect(pb.pools.map((p) => p.pool)).toEqual(["pb"]);
    expect(await eventsOf("orphans-found")).toHaveLength(before + 1);
  });

  it("marks orphans younger than the grace period recent", async () => {
    shift = 0;
    const r = await reconcile("?pool=pa");
    expect(r.orphans.length).toBe(5);
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
    expect(r.orphans).toHaveLength(5);

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
      await deleteOrphans({ pool: "pa", blobs: ["ghost/0123456789ab", replicaName(kept, "pa")] }),
      409,
    );
    expect(err.code).toBe("NotAnOrphan");
    expect(err.details).toEqual({
      pool: "pa",
      blobs: [{ name: replicaName(kept, "pa"), reason: "claimed" }],
    });
    expect(await containers()).toEqual(before);
    expect(await eventsOf("orphans-deleted")).toHaveLength(events);
  });

  it("refuses a recent orphan, and deletes it once it is past the grace period", async () => {
    await pageBlob("pa", "young/cccccccccccc");
    shift = 0;
    const young = { pool: "pa", blobs: ["young/cccccccccccc"] };
    const err = await errorOf(await deleteOrphans(young), 409);
    expect(err.details).toEqual({
      pool: "pa",
      blobs: [{ name: "young/cccccccccccc", reason: "recent" }],
    });
    expect(await blobNames("pa")).toContain("young/cccccccccccc");

    shift = OLD;
    const done = await jsonOf<OrphanDeleteResult>(await deleteOrphans(young), 200);
    expect(done.results).toEqual([{ name: "young/cccccccccccc", outcome: "deleted" }]);
    expect(await blobNames("pa")).not.toContain("young/cccccccccccc");
  });

  it("deletes a named orphan only, records it, and answers gone when asked again", async () => {
    await pageBlob("pa", "named/dddddddddddd", { pagediskvolume: "named" });
    const others = (await blobNames("pa")).filter((n) => n !== "named/dddddddddddd");
    const done = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: ["named/dddddddddddd"] }),
      200,
    );
    expect(done.results).toEqual([{ name: "named/dddddddddddd", outcome: "deleted" }]);
    expect(await blobNames("pa")).toEqual(others);
    const [event] = await eventsOf("orphans-deleted");
    expect(event).toMatchObject({
      pool: "pa",
      data: { count: 1, blobs: ["named/dddddddddddd"], leasesBroken: 0 },
    });

    const again = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: ["named/dddddddddddd"] }),
      200,
    );
    expect(again.results).toEqual([{ name: "named/dddddddddddd", outcome: "gone" }]);
  });

  it("deletes a leased orphan only with breakLeases", async () => {
    const blob = await pageBlob("pa", "leased/eeeeeeeeeeee", { pagediskvolume: "leased" });
    await blob.getBlobLeaseClient().acquireLease(-1);
    const err = await errorOf(await deleteOrphans({ pool: "pa", blobs: [blob.name] }), 409);
    expect(err.details).toEqual({ pool: "pa", blobs: [{ name: blob.name, reason: "leased" }] });
    expect(await blobNames("pa")).toContain(blob.name);

    const done = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pa", blobs: [blob.name], breakLeases: true }),
      200,
    );
    expect(done.results).toEqual([{ name: blob.name, outcome: "deleted", leaseBroken: true }]);
    expect(await blobNames("pa")).not.toContain(blob.name);
  });

  it("with all: true takes old orphans, skips recent and leased ones, never claimed blobs", async () => {
    await fx.addPool("pd", "pd-disks");
    const alpha = await createVolume("alpha", { pools: ["pd"] });
    await pageBlob("pd", "x/111111111111");
    const leased = await pageBlob("pd", "y/222222222222");
    await leased.getBlobLeaseClient().acquireLease(-1);

    shift = 0;
    const all = { pool: "pd", all: true };
    const young = await jsonOf<OrphanDeleteResult>(await deleteOrphans(all), 200);
    expect(young.results.map((r) => [r.name, r.outcome])).toEqual([
      ["x/111111111111", "skipped"],
      ["y/222222222222", "skipped"],
    ]);
    expect(await blobNames("pd")).toHaveLength(3);

    shift = OLD;
    const old = await jsonOf<OrphanDeleteResult>(await deleteOrphans(all), 200);
    expect(old.results).toEqual([
      {
        name: "y/222222222222",
        outcome: "skipped",
        message: "leased: give breakLeases to delete it",
      },
      { name: "x/111111111111", outcome: "deleted" },
    ]);
    expect(await blobNames("pd")).toEqual([replicaName(alpha, "pd"), "y/222222222222"]);

    const broken = await jsonOf<OrphanDeleteResult>(
      await deleteOrphans({ pool: "pd", all: true, breakLeases: true }),
      200,
    );
    expect(broken.results).toEqual([
      { name: "y/222222222222", outcome: "deleted", leaseBroken: true },
    ]);
    expect(await blobNames("pd")).toEqual([replicaName(alpha, "pd")]);
  });

  it("refuses a malformed request before touching anything", async () => {
    const before = await containers();
    for (const body of [
      { pool: "pa" },
      { pool: "pa", all: true, blobs: ["notes.txt"] },
      { pool: "pa", blobs: [] },
      { pool: "pa", blobs: ["notes.txt", "notes.txt"] },
      { pool: "pa", all: false },
      { pool: "pa", blobs: ["notes.txt"], force: true },
    ]) {
      expect((await errorOf(await deleteOrphans(body), 400)).code, JSON.stringify(body)).toBe(
        "InvalidRequest",
      );
    }
    expect((await errorOf(await deleteOrphans({ pool: "nope", all: true }), 404)).code).toBe(
      "PoolNotFound",
    );
    expect(
      (await errorOf(await call("POST", "/reconciliation/delete-orphans", {}, false), 401)).code,
    ).toBe("Unauthorized");
    expect(await containers()).toEqual(before);
  });
});
