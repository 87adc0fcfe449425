/**
 * A volume's lease on all its replicas at once. Every replica is tried
 * even when one fails, so that no call is still running when the caller
 * rolls back or retries; then the first failure is thrown.
 */
import type { ControlPlane } from "../control-plane.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import type { VolumeRecord } from "../registry/volumes.ts";
import { dropReplicaLease, takeReplicaLease } from "../storage/replica-leases.ts";

async function onEveryReplica(
  cp: ControlPlane,
  volume: VolumeRecord,
  label: string,
  step: (pool: PoolRecord, replicaId: string) => Promise<void>,
): Promise<void> {
  const outcomes = await Promise.allSettled(
    volume.status.replicas.map(async (replica, i) => {
      const pool = await pools(cp.registry).get(replica.pool);
      // A pool cannot be removed while it holds replicas; a missing one is a broken invariant.
      if (!pool) throw new Error(`volume ${volume.name}: pool ${replica.pool} is not registered`);
      cp.faults?.beforeStep(`${label} ${i}`);
      await step(pool.value, replica.id);
    }),
  );
  const failed = outcomes.find((o) => o.status === "rejected");
  if (failed) throw failed.reason;
}

/** Lease every replica under `leaseId`, breaking any other lease. */
export function takeLeases(cp: ControlPlane, volume: VolumeRecord, leaseId: string): Promise<void> {
  return onEveryReplica(cp, volume, "take-lease", (pool, id) =>
    takeReplicaLease(pool, volume.name, id, leaseId),
  );
}

/** Leave every replica without a lease: ours (`leaseId`) released, any other broken. */
export function dropLeases(
  cp: ControlPlane,
  volume: VolumeRecord,
  leaseId: string | null,
): Promise<void> {
  return onEveryReplica(cp, volume, "drop-lease", (pool, id) =>
    dropReplicaLease(pool, volume.name, id, leaseId),
  );
}
