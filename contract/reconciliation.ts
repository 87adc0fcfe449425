/**
 * Reconciliation of the registry with the pools' containers: blobs no
 * volume record claims (orphans) and replicas whose blob is gone (missing).
 * Orphans are only reported; they are deleted on an explicit request
 * (`POST /api/v1/reconciliation/delete-orphans`) and by nothing else.
 */
import { z } from "zod";
import { PoolName, Timestamp, VolumeName } from "./names.ts";
import { ReplicaId, ReplicaState, VolumeState } from "./volume.ts";

/**
 * Why a blob is an orphan:
 *
 * - `no-such-volume`: it names a volume that has no record;
 * - `no-such-replica`: the volume exists but has no such replica on this pool;
 * - `not-pagedisk`: neither its metadata nor its name say it is a replica.
 */
export const ORPHAN_REASONS = ["no-such-volume", "no-such-replica", "not-pagedisk"] as const;
export const OrphanReason = z.enum(ORPHAN_REASONS);
export type OrphanReason = z.infer<typeof OrphanReason>;

/** A blob's name in a container: Azure allows up to 1024 characters. */
export const BlobName = z.string().min(1).max(1024);

/** A blob in a pool's container that no volume record claims. */
export const Orphan = z.object({
  pool: PoolName,
  /** The blob's name in the pool's container. */
  name: BlobName,
  sizeBytes: z.int().min(0),
  lastModified: Timestamp,
  /** Azure's lease state: available, leased, expired, breaking or broken. */
  leaseState: z.string(),
  /** The volume its metadata (or, without metadata, its name) says it belongs to. */
  volume: z.string().nullable(),
  replica: z.string().nullable(),
  reason: OrphanReason,
  /**
   * Modified within the grace period: it may be a volume or replica being
   * created right now, so it is reported but never deleted.
   */
  recent: z.boolean(),
});
export type Orphan = z.infer<typeof Orphan>;

/**
 * Why a replica's blob counts as missing: not in its pool's container, or
 * its pool is not registered at all.
 */
export const MissingReason = z.enum(["blob-not-found", "pool-not-registered"]);
export type MissingReason = z.infer<typeof MissingReason>;

/** A replica a volume record lists whose blob is not there. */
export const MissingBlob = z.object({
  volume: VolumeName,
  replica: ReplicaId,
  pool: PoolName,
  /** The blob name the replica should have. */
  name: BlobName,
  replicaState: ReplicaState,
  volumeState: VolumeState,
  reason: MissingReason,
  /** The replica entered its state within the grace period: its blob may be on its way. */
  recent: z.boolean(),
});
export type MissingBlob = z.infer<typeof MissingBlob>;

/** How listing one pool went. An unreachable pool was not checked: nothing about it is known. */
export const PoolScan = z.object({
  pool: PoolName,
  reachable: z.boolean(),
  /** Blobs listed; null when the pool could not be listed. */
  blobs: z.int().min(0).nullable(),
  /** Why the pool could not be listed. */
  error: z
    .object({
      message: z.string(),
      status: z.int().nullable(),
      azureCode: z.string().nullable(),
    })
    .optional(),
});
export type PoolScan = z.infer<typeof PoolScan>;

/** `GET /api/v1/reconciliation` */
export const ReconciliationQuery = z.strictObject({
  /** Only this pool; every registered pool when absent. */
  pool: PoolName.optional(),
});
export type ReconciliationQuery = z.infer<typeof ReconciliationQuery>;

export const Reconciliation = z.object({
  at: Timestamp,
  /** Blobs modified (replicas changed) within this many seconds are `recent`. */
  graceSeconds: z.int().min(0),
  pools: z.array(PoolScan),
  orphans: z.array(Orphan),
  missing: z.array(MissingBlob),
});
export type Reconciliation = z.infer<typeof Reconciliation>;

/** Most blobs one delete request may name. */
export const MAX_ORPHANS_PER_DELETE = 1000;

/**
 * `POST /api/v1/reconciliation/delete-orphans`: the named blobs of one
 * pool, or (`all: true`) every orphan of that pool that is not recent.
 * Leased orphans are deleted only with `breakLeases: true`.
 */
export const OrphanDeleteRequest = z
  .strictObject({
    pool: PoolName,
    blobs: z.array(BlobName).min(1).max(MAX_ORPHANS_PER_DELETE).optional(),
    all: z.literal(true).optional(),
    breakLeases: z.boolean().default(false),
  })
  .superRefine((v, ctx) => {
    if ((v.blobs === undefined) === (v.all === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["blobs"],
        message: "name the blobs to delete, or give all: true (not both)",
      });
    }
    if (v.blobs && new Set(v.blobs).size !== v.blobs.length) {
      ctx.addIssue({ code: "custom", path: ["blobs"], message: "blobs lists a name twice" });
    }
  });
export type OrphanDeleteRequest = z.infer<typeof OrphanDeleteRequest>;

/**
 * What happened to one blob: deleted; gone already; skipped (with `all`:
 * recent, or leased without `breakLeases`); or failed (the message says why).
 */
export const OrphanDeleteOutcome = z.enum(["deleted", "gone", "skipped", "failed"]);
export type OrphanDeleteOutcome = z.infer<typeof OrphanDeleteOutcome>;

export const OrphanDeleteResult = z.object({
  pool: PoolName,
  results: z.array(
    z.object({
      name: BlobName,
      outcome: OrphanDeleteOutcome,
      /** Its lease was broken to delete it. */
      leaseBroken: z.boolean().optional(),
      message: z.string().optional(),
    }),
  ),
});
export type OrphanDeleteResult = z.infer<typeof OrphanDeleteResult>;

/** Why a named blob may not be deleted; in `details.blobs` of a `NotAnOrphan` error. */
export const OrphanRefusal = z.enum(["claimed", "recent", "leased"]);
export type OrphanRefusal = z.infer<typeof OrphanRefusal>;
