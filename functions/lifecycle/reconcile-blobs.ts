/**
 * Reconciliation: compare the pools' blobs with the volume records.
 *
 * - Blobs are named by their path in the pool's account,
 *   `<container>/<blob name>`: a pool's blobs are spread over its own
 *   container and one container per replica (pool-blobs.ts).
 * - An orphan is a blob no record claims. A record claims the blob of each
 *   of its replicas (`<volume>/<replica id>` in the replica's container on
 *   the replica's pool) in any state, from the moment the record exists.
 * - A replica container with no blob is reported as an orphan too, named
 *   `<container>/`, unless a record claims its replica (then the replica's
 *   blob is missing, and that is what is reported).
 * - A missing blob is a replica whose blob is not in its container.
 *
 * Races with creation. Volume creation (and a rebuild) writes the record
 * before the container and blob, so the containers are listed first and
 * the records read second: every blob listed was made after its record
 * was written, and so is claimed by the records read. The other way round,
 * a record read may name a blob made after its pool was listed; such a
 * replica is checked once more, blob by blob, before it is called missing.
 * Replicas being made (CREATING) or retired (RETIRING), and volumes being
 * deleted, are not looked for at all. What remains uncertain is marked
 * `recent`: a blob (or empty container) modified, or a replica changed,
 * within the grace period.
 *
 * A pool that cannot be listed is reported as such; nothing in it is
 * called orphaned or missing. Listing never changes anything but the event
 * log (`orphans-found`, once per call, when any orphan is found).
 */
import type {
  MissingBlob,
  Orphan,
  PoolScan,
  Reconciliation,
} from "../../contract/reconciliation.ts";
import { REPLICA_KEY, VOLUME_KEY } from "../../contract/replica-metadata.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import type { PoolLocation } from "../storage/pool-container.ts";
import {
  blobPath,
  isEmptyContainer,
  listPoolBlobs,
  type PoolBlob,
  poolBlobExists,
} from "../storage/pool-blobs.ts";
import { replicaBlobName } from "../storage/replica-blobs.ts";
import { replicaContainerName } from "../storage/replica-container.ts";
import { StorageFailure } from "../storage/storage-failure.ts";
import { note } from "./note.ts";

/** A blob younger than this with no record may be a creation in flight. */
export const DEFAULT_ORPHAN_GRACE_MS = 10 * 60_000;

/**
 * A replica blob's path when its metadata is missing:
 * `<container>/<volume>/<12 hex digits>`, in whichever container.
 */
const REPLICA_BLOB_PATH = /^[^/]+\/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\/([0-9a-f]{12})$/;

/** Replicas that are not looked for: their blob is being made or removed. */
const NOT_LOOKED_FOR = new Set(["CREATING", "RETIRING"]);

/** One pool's containers (its own and its replicas') as listed, or the failure that kept them from being listed. */
export type PoolListing =
  | { pool: PoolRecord; blobs: PoolBlob[] }
  | { pool: PoolRecord; failure: StorageFailure };

export interface ReconcileOptions {
  /** Only this pool. */
  pool?: string | undefined;
  graceMs: number;
}

export async function reconcileBlobs(
  cp: ControlPlane,
  options: ReconcileOptions,
): Promise<Reconciliation> {
  const registered = (await pools(cp.registry).list()).map((p) => p.value);
  const scanned =
    options.pool === undefined ? registered : [poolNamed(registered, options.pool)];
  const listings = await Promise.all(scanned.map(listPool));
  // Only now the records (see the top of this file).
  const records = (await volumes(cp.registry).list()).map((r) => r.value);
  const now = cp.now();

  const claims = claimedBlobs(records, registered);
  const byVolume = new Map(records.map((v) => [v.name, v]));
  const orphans: Orphan[] = [];
  for (const listing of listings) {
    if (!("blobs" in listing)) continue;
    for (const blob of listing.blobs) {
      if (!claims.has(claimKey(listing.pool.name, blob.name)))
        orphans.push(orphanOf(listing.pool.name, blob, byVolume, now, options.graceMs));
    }
  }
  const missing = await missingBlobs(records, listings, registered, options, now);

  if (orphans.length > 0) await noteOrphans(cp, options.pool, orphans);
  return {
    at: now.toISOString(),
    graceSeconds: Math.round(options.graceMs / 1000),
    pools: listings.map(scanOf),
    orphans,
    missing,
  };
}

/** The registered pool of that name; `PoolNotFound` otherwise. */
export function poolNamed(registered: readonly PoolRecord[], name: string): PoolRecord {
  const pool = registered.find((p) => p.name === name);
  if (!pool) throw new ApiError("PoolNotFound", `no pool named ${name}`, { pool: name });
  return pool;
}

/**
 * Every blob some record claims, and the container it lives in (`<container>/`),
 * as `claimKey(pool, path)`. A replica on a pool not registered claims
 * nothing: nothing of such a pool is listed.
 */
export function claimedBlobs(
  records: readonly VolumeRecord[],
  registered: readonly PoolLocation[],
): Set<string> {
  const containerOf = new Map(registered.map((p) => [p.name, p.container]));
  const claims = new Set<string>();
  for (const v of records) {
    for (const r of v.status.replicas) {
      const poolContainer = containerOf.get(r.pool);
      if (poolContainer === undefined) continue;
      claims.add(claimKey(r.pool, replicaPath(poolContainer, v.name, r.id)));
      claims.add(claimKey(r.pool, blobPath(replicaContainerName(poolContainer, r.id), "")));
    }
  }
  return claims;
}

/** The path replica `replicaId` of `volume` has on a pool whose container is `poolContainer`. */
function replicaPath(poolContainer: string, volume: string, replicaId: string): string {
  const container = replicaContainerName(poolContainer, replicaId);
  return blobPath(container, replicaBlobName(volume, replicaId));
}

export function claimKey(pool: string, path: string): string {
  // A newline is in no pool name, so the key cannot be ambiguous.
  return `${pool}\n${path}`;
}

/** An unclaimed blob as reported: whose it says it is, and why no record has it. */
export function orphanOf(
  pool: string,
  blob: PoolBlob,
  byVolume: ReadonlyMap<string, VolumeRecord>,
  now: Date,
  graceMs: number,
): Orphan {
  const owner = ownerOf(blob);
  return {
    pool,
    name: blob.name,
    sizeBytes: blob.sizeBytes,
    lastModified: blob.lastModified.toISOString(),
    leaseState: blob.leaseState,
    volume: owner?.volume ?? null,
    replica: owner?.replica ?? null,
    reason: !owner
      ? "not-pagedisk"
      : byVolume.has(owner.volume)
        ? "no-such-replica"
        : "no-such-volume",
    // A clock behind the storage service's makes a blob look younger: recent, the safe side.
    recent: now.getTime() - blob.lastModified.getTime() < graceMs,
  };
}

/**
 * The volume and replica a blob says it belongs to: its metadata, else its
 * name. An empty replica container says it by its metadata alone.
 */
function ownerOf(blob: PoolBlob): { volume: string; replica: string | null } | undefined {
  const volume = blob.metadata[VOLUME_KEY];
  if (volume) return { volume, replica: blob.metadata[REPLICA_KEY] ?? null };
  const m = REPLICA_BLOB_PATH.exec(blob.name);
  return m ? { volume: m[1]!, replica: m[2]! } : undefined;
}

async function listPool(pool: PoolRecord): Promise<PoolListing> {
  try {
    return { pool, blobs: await listPoolBlobs(pool) };
  } catch (err) {
    if (!(err instanceof StorageFailure)) throw err;
    return { pool, failure: err };
  }
}

function scanOf(listing: PoolListing): PoolScan {
  if ("blobs" in listing) {
    const blobs = listing.blobs.filter((b) => !isEmptyContainer(b)).length;
    return { pool: listing.pool.name, reachable: true, blobs };
  }
  const { failure } = listing;
  return {
    pool: listing.pool.name,
    reachable: false,
    blobs: null,
    error: {
      message: failure.message,
      status: failure.status ?? null,
      azureCode: failure.azureCode ?? null,
    },
  };
}

async function missingBlobs(
  records: readonly VolumeRecord[],
  listings: readonly PoolListing[],
  registered: readonly PoolRecord[],
  options: ReconcileOptions,
  now: Date,
): Promise<MissingBlob[]> {
  const listed = new Map(
    listings.map((l) => [
      l.pool.name,
      "blobs" in l ? new Set(l.blobs.map((b) => b.name)) : undefined,
    ]),
  );
  const poolOf = new Map(registered.map((p) => [p.name, p]));
  const found: Array<Promise<MissingBlob | undefined>> = [];
  for (const v of records) {
    if (v.status.state === "DELETING") continue;
    for (const r of v.status.replicas) {
      if (NOT_LOOKED_FOR.has(r.state)) continue;
      if (options.pool !== undefined && r.pool !== options.pool) continue;
      const pool = poolOf.get(r.pool);
      const since = Date.parse(r.since ?? v.createdAt);
      const about = {
        volume: v.name,
        replica: r.id,
        pool: r.pool,
        replicaState: r.state,
        volumeState: v.status.state,
        recent: now.getTime() - since < options.graceMs,
      };
      if (!pool) {
        // Its container is not known, so neither is its path.
        found.push(Promise.resolve({ ...about, name: null, reason: "pool-not-registered" }));
        continue;
      }
      const name = replicaPath(pool.container, v.name, r.id);
      const names = listed.get(r.pool);
      // A pool that could not be listed says nothing about its blobs; its scan says why.
      if (!names || names.has(name)) continue;
      found.push(confirmMissing(pool, { ...about, name, reason: "blob-not-found" }));
    }
  }
  return (await Promise.all(found)).filter((m) => m !== undefined);
}

/** Look once more: the blob may have been made after its pool was listed. */
async function confirmMissing(
  pool: PoolRecord,
  entry: MissingBlob & { name: string },
): Promise<MissingBlob | undefined> {
  try {
    return (await poolBlobExists(pool, entry.name)) ? undefined : entry;
  } catch (err) {
    if (!(err instanceof StorageFailure)) throw err;
    // The pool answered the listing a moment ago; what it listed stands.
    return entry;
  }
}

async function noteOrphans(
  cp: ControlPlane,
  pool: string | undefined,
  orphans: readonly Orphan[],
): Promise<void> {
  const perPool: Record<string, number> = {};
  for (const o of orphans) perPool[o.pool] = (perPool[o.pool] ?? 0) + 1;
  const recent = orphans.filter((o) => o.recent).length;
  await note(cp, {
    type: "orphans-found",
    ...(pool === undefined ? {} : { pool }),
    message: `${orphans.length} orphan blob(s) found (${recent} recent) in pool(s) ${Object.keys(perPool).join(", ")}`,
    data: { count: orphans.length, recent, pools: perPool },
  });
}
