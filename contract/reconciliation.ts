/**
 * Reconciliation of the registry with the pools' blobs: blobs no volume
 * record claims (orphans) and replicas whose blob is gone (missing).
 * Orphans are only reported; they are deleted on an explicit request
 * (`POST /api/v1/reconciliation/delete-orphans`) and by nothing else.
 *
 * A pool's blobs are spread over containers (its own, and one per
 * replica), so a blob is named by its path in the pool's account,
 * `<container>/<blob name>`; an empty replica container is named
 * `<container>/`.
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

/**
 * A blob's path in its pool's account, `<container>/<blob name>` (a
 * container name has 3 to 63 characters, a blob name up to 1024), or
 * `<container>/` for a replica container with no blob in it.
 */
export const BlobPath = z
  .string()
  .max(63 + 1 + 1024)
  .regex(/^[a-z0-9-]{3,63}\//, {
    error: "a blob is named by its path, <container>/<blob name>, as the reconciliation lists it",
  });

/**
 * A blob of a pool that no volume record claims, or a replica container of
 * the pool with no blob in it whose replica no record claims.
 */
export const Orphan = z.object({
  pool: PoolName,
  /** `<container>/<blob name>`; `<container>/` for an empty replica container. */
  name: BlobPath,
  /** 0 for an empty container. */
  sizeBytes: z.int().min(0),
  /** Of the blob, or of the empty container. */
  lastModified: Timestamp,
  /**
   * Azure's lease state, of the blob or of the empty container: available,
   * leased, expired, breaking or broken.
   */
  leaseState: z.string(),
  /**
   * The volume its metadata (or, without metadata, a blob's name
   * `<volume>/<replica id>`) says it belongs to.
   */
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
 * Why a replica's blob counts as missing: not in its container on its
 * pool, or its pool is not registered at all.
 */
export const MissingReason = z.enum(["blob-not-found", "pool-not-registered"]);
export type MissingReason = z.infer<typeof MissingReason>;

/** A replica a volume record lists whose blob is not there. */
export const MissingBlob = z.object({
  volume: VolumeName,
  replica: ReplicaId,
  pool: PoolName,
  /**
   * The path the replica's blob should have, `<container>/<blob name>`;
   * null when its pool is not registered (its container is not known).
   */
  name: BlobPath.nullable(),
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
  /** Blobs listed, in every container of the pool; null when the pool could not be listed. */
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
 * pool (by path, as the reconciliation lists them), or (`all: true`) every
 * orphan of that pool that is not recent. Leased orphans are deleted only
 * with `breakLeases: true`. A blob deleted from a replica container that
 * no record claims takes the container with it once it holds no blob; an
 * empty replica container is deleted by naming it, `<container>/`.
 */
export const OrphanDeleteRequest = z
  .strictObject({
    pool: PoolName,
    blobs: z.array(BlobPath).min(1).max(MAX_ORPHANS_PER_DELETE).optional(),
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
 * What happened to one blob (or empty container): deleted; gone already;
 * skipped (with `all`: recent, or leased without `breakLeases`); or failed
 * (the message says why).
 */
export const OrphanDeleteOutcome = z.enum(["deleted", "gone", "skipped", "failed"]);
export type OrphanDeleteOutcome = z.infer<typeof OrphanDeleteOutcome>;

export const OrphanDeleteResult = z.object({
  pool: PoolName,
  results: z.array(
    z.object({
      name: BlobPath,
      outcome: OrphanDeleteOutcome,
      /** Its lease was broken to delete it. */
      leaseBroken: z.boolean().optional(),
      /**
       * It was the last blob of its replica container, and the container
       * (which no record claims) was deleted too. When that delete fails,
       * the blob is still `deleted` and the message says so: the empty
       * container is then listed as an orphan of its own.
       */
      containerDeleted: z.boolean().optional(),
      message: z.string().optional(),
    }),
  ),
});
export type OrphanDeleteResult = z.infer<typeof OrphanDeleteResult>;

/**
 * Why a named blob may not be deleted; in `details.blobs` of a `NotAnOrphan`
 * error. `not-empty`: a replica container named `<container>/` that holds
 * blobs (it is deleted with the last of them).
 */
export const OrphanRefusal = z.enum(["claimed", "recent", "leased", "not-empty"]);
export type OrphanRefusal = z.infer<typeof OrphanRefusal>;
