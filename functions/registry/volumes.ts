/**
 * Volume records: spec, status and the lease the control plane holds for
 * the owner. One row per volume; the lists (pools, nodes, replicas) are JSON
 * strings because Table Storage has no arrays.
 */
import { z } from "zod";
import { Timestamp, VolumeName } from "../../contract/names.ts";
import { VolumeSpec, VolumeStatus } from "../../contract/volume.ts";
import { fromInt64, int64, packJson, unpackJson } from "./fields.ts";
import { type Codec, type RecordTable, recordTable } from "./records.ts";
import type { Registry } from "./tables.ts";

export const VolumeRecord = z.object({
  name: VolumeName,
  spec: VolumeSpec,
  status: VolumeStatus,
  /** Lease held on every replica for `status.ownerNode`; only the owner ever sees it. */
  leaseId: z.string().nullable(),
  /**
   * When the stored access policies named after `leaseId` had been set on
   * every replica reached (storage/replica-container.ts): stamped as the
   * volume becomes ATTACHED, after its leases are taken. Azure may refuse a
   * SAS bound to a policy for its first 30 s. Absent on records from before
   * it was kept, and while no lease is held.
   */
  policiesSetAt: Timestamp.optional(),
  /**
   * Lease the control plane holds on the replicas it copies while the
   * volume is DETACHED (health/repair-detached.ts); absent otherwise. An
   * attach breaks it with every other lease.
   */
  copyLeaseId: z.string().optional(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type VolumeRecord = z.infer<typeof VolumeRecord>;

export const volumeCodec: Codec<VolumeRecord> = {
  rowKey: "volume",
  name: (v) => v.name,
  encode: (v) => ({
    sizeBytes: int64(v.spec.sizeBytes),
    replicaCount: v.spec.replicas,
    pools: packJson("pools", v.spec.pools),
    requiredNodes: packJson("requiredNodes", v.spec.requiredNodes),
    preferredNodes: packJson("preferredNodes", v.spec.preferredNodes),
    failover: v.spec.failover,
    state: v.status.state,
    // Kept as its own property so that queries can filter on the owner.
    ...(v.status.ownerNode === null ? {} : { ownerNode: v.status.ownerNode }),
    epoch: int64(v.status.epoch),
    replicas: packJson("replicas", v.status.replicas),
    ...(v.status.failoverPending === true ? { failoverPending: true } : {}),
    ...(v.status.writers === undefined ? {} : { writers: packJson("writers", v.status.writers) }),
    ...(v.leaseId === null ? {} : { leaseId: v.leaseId }),
    // Meaningless once the lease is dropped: not kept then.
    ...(v.leaseId === null || v.policiesSetAt === undefined ? {} : { policiesSetAt: v.policiesSetAt }),
    ...(v.copyLeaseId === undefined ? {} : { copyLeaseId: v.copyLeaseId }),
    createdAt: v.createdAt,
    updatedAt: v.updatedAt,
  }),
  decode: (name, p) =>
    VolumeRecord.parse({
      name,
      spec: {
        sizeBytes: fromInt64(p.sizeBytes),
        replicas: p.replicaCount,
        pools: unpackJson(p.pools),
        requiredNodes: unpackJson(p.requiredNodes),
        preferredNodes: unpackJson(p.preferredNodes),
        failover: p.failover,
      },
      status: {
        state: p.state,
        ownerNode: p.ownerNode ?? null,
        epoch: fromInt64(p.epoch),
        replicas: unpackJson(p.replicas),
        ...(p.failoverPending === undefined ? {} : { failoverPending: p.failoverPending }),
        ...(p.writers === undefined ? {} : { writers: unpackJson(p.writers) }),
      },
      leaseId: p.leaseId ?? null,
      ...(p.policiesSetAt === undefined ? {} : { policiesSetAt: p.policiesSetAt }),
      ...(p.copyLeaseId === undefined ? {} : { copyLeaseId: p.copyLeaseId }),
      createdAt: p.createdAt,
      updatedAt: p.updatedAt,
    }),
};

/**
 * `status` with the failover mark set or cleared. A cleared mark is left
 * out altogether, so an unmarked volume looks as it did before the field
 * existed (in the row and in the API).
 */
export function withFailoverPending(
  status: VolumeRecord["status"],
  pending: boolean,
): VolumeRecord["status"] {
  const { failoverPending: _previous, ...rest } = status;
  return pending ? { ...rest, failoverPending: true } : rest;
}

export function volumes(registry: Registry): RecordTable<VolumeRecord> {
  return recordTable(registry.volumes, volumeCodec);
}
