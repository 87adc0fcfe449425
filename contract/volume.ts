/**
 * Volumes: the spec the user asks for and the status the control plane
 * keeps (after MayaStor's volume resource: spec is desired, status is
 * observed and volatile).
 */
import { z } from "zod";
import { NodeName, PoolName, Timestamp, VolumeName } from "./names.ts";

/** A page blob's size limit, and so a volume's: 8 TiB. */
export const MAX_VOLUME_BYTES = 8 * 2 ** 40;
/** Page blobs are made of 512-byte pages. */
export const SECTOR_BYTES = 512;
/** Replicas per volume, each on a distinct pool. */
export const MAX_REPLICAS = 3;
/**
 * Replicas a volume's record can list at once: each of its replicas plus
 * one being built to take its place.
 */
export const MAX_REPLICA_SLOTS = 2 * MAX_REPLICAS;
/** Bound on placement lists, so a record stays far below Table Storage's property limit. */
const MAX_NODES_LISTED = 32;
const MAX_POOLS_LISTED = 16;

export const SizeBytes = z
  .int({ error: "sizeBytes must be an integer number of bytes" })
  .min(SECTOR_BYTES, { error: `sizeBytes must be at least ${SECTOR_BYTES}` })
  .max(MAX_VOLUME_BYTES, { error: `sizeBytes must be at most 8 TiB (${MAX_VOLUME_BYTES})` })
  .multipleOf(SECTOR_BYTES, { error: `sizeBytes must be a multiple of ${SECTOR_BYTES}` });

/** What happens when the owner node is lost: reattach elsewhere, or wait for an operator. */
export const FailoverPolicy = z.enum(["automatic", "manual"]);
export type FailoverPolicy = z.infer<typeof FailoverPolicy>;

const NodeList = z.array(NodeName).max(MAX_NODES_LISTED);
const PoolList = z.array(PoolName).max(MAX_POOLS_LISTED);

/** Attachment lifecycle; the allowed moves are in functions/registry/volume-states.ts. */
export const VOLUME_STATES = [
  "CREATING",
  "DETACHED",
  "ATTACHING",
  "ATTACHED",
  "DETACHING",
  "FENCING",
  "DELETING",
] as const;
export const VolumeState = z.enum(VOLUME_STATES);
export type VolumeState = z.infer<typeof VolumeState>;

/**
 * A replica's life (the allowed moves are in functions/registry/replica-states.ts):
 *
 * - CREATING: its blob is being made;
 * - ONLINE: in sync, written by every write and readable;
 * - OFFLINE: taken out by its writer after a storage failure, or never
 *   reachable since the volume was attached; it misses writes;
 * - RESYNCING: its pool answers again; the writer copies to it the regions
 *   written while it was offline (all of it when the writer has no record);
 * - REBUILDING: a new blob filled with a full copy, to take the place of
 *   another replica (`replaces`) or to raise the replica count;
 * - RETIRING: leaving the volume; its blob is deleted, then it is dropped.
 */
export const REPLICA_STATES = [
  "CREATING",
  "ONLINE",
  "OFFLINE",
  "RESYNCING",
  "REBUILDING",
  "RETIRING",
] as const;
export const ReplicaState = z.enum(REPLICA_STATES);
export type ReplicaState = z.infer<typeof ReplicaState>;

/** A replica's id: 12 hex digits, part of its blob name. */
export const ReplicaId = z.string().regex(/^[0-9a-f]{12}$/, { error: "a replica id is 12 hex digits" });

function noDuplicates(list: readonly string[]): boolean {
  return new Set(list).size === list.length;
}

/** The desired shape of a volume. */
export const VolumeSpec = z.object({
  sizeBytes: SizeBytes,
  /** Number of replicas, each a page blob on a distinct pool. */
  replicas: z.int().min(1).max(MAX_REPLICAS),
  /** Pools the replicas may use; empty means any usable pool. */
  pools: PoolList,
  /** The volume attaches only to these nodes (empty: any node). */
  requiredNodes: NodeList,
  /** Nodes tried first when placing the volume. */
  preferredNodes: NodeList,
  failover: FailoverPolicy,
});
export type VolumeSpec = z.infer<typeof VolumeSpec>;

/** `POST /api/v1/volumes`; omitted fields take the defaults shown in the schema. */
export const VolumeCreate = z
  .strictObject({
    name: VolumeName,
    sizeBytes: SizeBytes,
    replicas: z.int().min(1).max(MAX_REPLICAS).default(1),
    pools: PoolList.default([]),
    requiredNodes: NodeList.default([]),
    preferredNodes: NodeList.default([]),
    failover: FailoverPolicy.default("automatic"),
  })
  .superRefine((v, ctx) => {
    for (const key of ["pools", "requiredNodes", "preferredNodes"] as const) {
      if (!noDuplicates(v[key]))
        ctx.addIssue({ code: "custom", path: [key], message: `${key} lists a name twice` });
    }
    if (v.pools.length > 0 && v.pools.length < v.replicas) {
      ctx.addIssue({
        code: "custom",
        path: ["pools"],
        message: `${v.replicas} replicas need at least ${v.replicas} distinct pools, ${v.pools.length} listed`,
      });
    }
  });
export type VolumeCreate = z.infer<typeof VolumeCreate>;

/**
 * `PATCH /api/v1/volumes/{name}`: placement, failover policy, and the
 * replica count (raising it adds a replica that is rebuilt from the others;
 * lowering it retires one).
 */
export const VolumePatch = z
  .strictObject({
    replicas: z.int().min(1).max(MAX_REPLICAS).optional(),
    requiredNodes: NodeList.optional(),
    preferredNodes: NodeList.optional(),
    failover: FailoverPolicy.optional(),
  })
  .superRefine((v, ctx) => {
    for (const key of ["requiredNodes", "preferredNodes"] as const) {
      const list = v[key];
      if (list && !noDuplicates(list)) {
        ctx.addIssue({ code: "custom", path: [key], message: `${key} lists a name twice` });
      }
    }
  })
  .refine((v) => Object.keys(v).length > 0, {
    message: "nothing to change: give replicas, requiredNodes, preferredNodes or failover",
    // Only for a truly empty patch: `{"sizeBytes": 1}` is already refused for its unknown key.
    when: (payload) => payload.issues.length === 0,
  });
export type VolumePatch = z.infer<typeof VolumePatch>;

/** One page blob holding a full copy of the volume. */
export const Replica = z.object({
  /** Stable id of this replica; part of its blob name. */
  id: ReplicaId,
  pool: PoolName,
  /** Blob URL without any SAS. */
  uri: z.url(),
  state: ReplicaState,
  /** When it entered `state`; absent on rows written before the field existed. */
  since: Timestamp.optional(),
  /** Percent done of the copy while RESYNCING or REBUILDING. */
  progress: z.number().min(0).max(100).optional(),
  /** What is happening to it, or why it is in its state, in words. */
  message: z.string().max(1024).optional(),
  /** The replica this one is being built to take the place of (retired once this is ONLINE). */
  replaces: ReplicaId.optional(),
  /**
   * The storage service's copy (Copy Blob) filling it, while its volume is
   * DETACHED and the control plane resyncs or rebuilds it with no writer.
   */
  copyId: z.string().max(128).optional(),
  /**
   * OFFLINE because its content is not trusted: its last writer stopped
   * with writes in flight that may have reached other replicas only. It is
   * resynced in full at once (no dirty log may bring it back), and its pool
   * is not blamed. Dropped when it moves on.
   */
  stale: z.literal(true).optional(),
});
export type Replica = z.infer<typeof Replica>;

/** Writers a volume's status remembers. */
export const MAX_WRITERS = 4;

/** What the control plane observes and decides. */
export const VolumeStatus = z.object({
  state: VolumeState,
  /** Node allowed to write, while attached (or being attached/fenced). */
  ownerNode: NodeName.nullable(),
  /** Raised by every change of writer; a stale epoch can never win a conditional write. */
  epoch: z.int().min(0),
  replicas: z.array(Replica).max(MAX_REPLICA_SLOTS),
  /**
   * Set when the sweeper fenced the volume off a lost node: it still owes
   * the volume an automatic failover. While the volume is DETACHED with this
   * mark and `failover: automatic`, each sweep attaches it to an eligible
   * node. Cleared when an attach completes, when an operator attaches or
   * detaches it, and when fencing ends in DETACHED under manual failover.
   * Absent means false (rows written before the field existed).
   */
  failoverPending: z.boolean().optional(),
  /**
   * The nodes that wrote the volume, newest first, with the epoch of each
   * attachment (at most `MAX_WRITERS`): whose report about which epoch is
   * heard (a `replicas-diverged` report may come long after its attach, and
   * the events that said so expire). Absent on records written before it.
   */
  writers: z.array(z.object({ node: NodeName, epoch: z.int().min(1) })).max(MAX_WRITERS).optional(),
});
export type VolumeStatus = z.infer<typeof VolumeStatus>;

export const Volume = z.object({
  name: VolumeName,
  spec: VolumeSpec,
  status: VolumeStatus,
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Volume = z.infer<typeof Volume>;

export const VolumeList = z.object({ items: z.array(Volume) });
export type VolumeList = z.infer<typeof VolumeList>;
