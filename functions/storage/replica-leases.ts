/**
 * Leases on replica blobs: how the control plane fences writers. Every
 * agent write carries the lease id, so whoever holds a blob's lease is its
 * only possible writer. That stops an honest writer; a hostile one could
 * break the lease with the write permission its SAS grants, so every change
 * of lease also changes who may use a SAS at all (replica-container.ts):
 * the new lease's writer only, or nobody. All calls are safe to repeat.
 */
import type { BlobLeaseClient } from "@azure/storage-blob";
import { restStatus } from "../rest-error.ts";
import type { PoolLocation } from "./pool-container.ts";
import { replicaBlob } from "./replica-blobs.ts";
import { admitWriter, revokeWriters } from "./replica-container.ts";
import { onPool } from "./storage-failure.ts";

/** A foreign lease is broken and the acquire retried at most this often before giving up. */
const TAKE_ATTEMPTS = 3;

/**
 * Whose lease `takeReplicaLease` takes:
 * - `new-writer`: a writer's, under a lease id just drawn (attach, failover);
 * - `writer`: the current writer's, whose SAS may already be in use (a
 *   repair bringing a replica back under the volume's lease);
 * - `copy`: the control plane's own, on a detached volume's replicas, for a
 *   server-side copy; no SAS is ever signed for it.
 */
export type LeaseTaker = "new-writer" | "writer" | "copy";

/**
 * Hold the replica's blob under `leaseId`, forever (until released or
 * broken).
 *
 * For a writer, only a SAS bound to `leaseId` may reach the blob from now
 * on, and every earlier writer's is made useless first, before its lease is
 * touched; then any other lease is broken with period 0, which fences its
 * holder at once. For a copy, another lease is a failure (409
 * LeaseAlreadyPresent) and changes nothing, and no writer is admitted.
 * Holding it already under `leaseId` is success.
 */
export async function takeReplicaLease(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
  leaseId: string,
  taker: LeaseTaker,
): Promise<void> {
  const breakOthers = taker !== "copy";
  if (breakOthers) await admitWriter(pool, replicaId, leaseId, taker === "new-writer");
  const blob = replicaBlob(pool, volume, replicaId);
  await onPool(pool.name, "take lease", async () => {
    for (let attempt = 1; ; attempt++) {
      try {
        // Acquiring with the id already held renews it, which makes a retry after a crash harmless.
        await blob.getBlobLeaseClient(leaseId).acquireLease(-1);
        return;
      } catch (err) {
        // 409 LeaseAlreadyPresent: someone else's lease. Only the control plane takes leases, and a
        // stale step of its own must lose to the current epoch, so break it and take it.
        if (!breakOthers || restStatus(err) !== 409 || attempt >= TAKE_ATTEMPTS) throw err;
        await breakLease(blob.getBlobLeaseClient());
      }
    }
  });
}

/**
 * Leave the replica's blob with no lease and no writer: every SAS revoked
 * first, then our lease (`leaseId`) released or whatever other lease is
 * there broken, since after this no one may write. A blob with no lease, or
 * no blob, is success.
 */
export async function dropReplicaLease(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
  leaseId: string | null,
): Promise<void> {
  await revokeWriters(pool, replicaId);
  const blob = replicaBlob(pool, volume, replicaId);
  await onPool(pool.name, "drop lease", async () => {
    if (leaseId === null) return breakLease(blob.getBlobLeaseClient());
    try {
      await blob.getBlobLeaseClient(leaseId).releaseLease();
    } catch (err) {
      const status = restStatus(err);
      if (status === 404) return;
      // 409: no lease (fine), or another id's lease (break it).
      if (status !== 409) throw err;
      await breakLease(blob.getBlobLeaseClient());
    }
  });
}

/**
 * Release the replica's lease if it is held under `leaseId`; any other
 * lease, or none, or no blob, is left as it is.
 */
export async function releaseReplicaLease(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
  leaseId: string,
): Promise<void> {
  const blob = replicaBlob(pool, volume, replicaId);
  await onPool(pool.name, "release lease", async () => {
    try {
      await blob.getBlobLeaseClient(leaseId).releaseLease();
    } catch (err) {
      const status = restStatus(err);
      if (status !== 404 && status !== 409) throw err;
    }
  });
}

/** Break with period 0; a blob without a lease is already what we want. */
async function breakLease(lease: BlobLeaseClient): Promise<void> {
  try {
    await lease.breakLease(0);
  } catch (err) {
    if (restStatus(err) !== 409) throw err;
  }
}
