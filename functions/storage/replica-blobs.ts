/**
 * Replica page blobs: creation and removal, both safe to repeat after a
 * crash. Each blob is alone in a container of its own (replica-container.ts
 * says why), is named `<volume>/<replica id>` there, and is tagged with
 * metadata so that an orphan can be traced back to the volume that made it.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { REPLICA_KEY, VOLUME_KEY } from "../../contract/replica-metadata.ts";
import { restCode, restStatus } from "../rest-error.ts";
import type { PoolLocation } from "./pool-container.ts";
import { deleteReplicaContainer, ensureReplicaContainer, replicaContainer } from "./replica-container.ts";
import { onPool } from "./storage-failure.ts";

export function replicaBlobName(volume: string, replicaId: string): string {
  return `${volume}/${replicaId}`;
}

/** A client for the replica's page blob, with the pool's credentials. */
export function replicaBlob(pool: PoolLocation, volume: string, replicaId: string): PageBlobClient {
  return replicaContainer(pool, replicaId).getPageBlobClient(replicaBlobName(volume, replicaId));
}

/** URL of a replica's blob, without credentials. */
export function replicaUri(pool: PoolLocation, volume: string, replicaId: string): string {
  const url = new URL(replicaBlob(pool, volume, replicaId).url);
  // A SAS connection string puts its signature on every URL; a replica URI must carry none.
  url.search = "";
  return url.toString();
}

/**
 * Create the replica's page blob of `sizeBytes`. Never overwrites: if a blob
 * of that name exists and was made for this replica (a retry), that is
 * success; any other blob there is a `StorageFailure`.
 */
export async function createReplicaBlob(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
  sizeBytes: number,
): Promise<void> {
  await ensureReplicaContainer(pool, volume, replicaId);
  const blob = replicaBlob(pool, volume, replicaId);
  await onPool(pool.name, "create page blob", async () => {
    try {
      await blob.create(sizeBytes, {
        conditions: { ifNoneMatch: "*" },
        metadata: { [VOLUME_KEY]: volume, [REPLICA_KEY]: replicaId },
      });
    } catch (err) {
      if (restStatus(err) !== 409) throw err;
      const existing = await blob.getProperties();
      if (existing.metadata?.[REPLICA_KEY] !== replicaId || existing.contentLength !== sizeBytes)
        throw err;
    }
  });
}

/**
 * Delete the replica's blob and its snapshots, breaking any lease first (a
 * forced delete fences the writer this way), then its container. Gone
 * already is success.
 */
export async function deleteReplicaBlob(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
): Promise<void> {
  const blob = replicaBlob(pool, volume, replicaId);
  const deleteBlob = async () => {
    try {
      await blob.delete({ deleteSnapshots: "include" });
    } catch (err) {
      // 404 BlobNotFound or ContainerNotFound: gone is what we want.
      if (restStatus(err) !== 404) throw err;
    }
  };
  await onPool(pool.name, "delete page blob", async () => {
    try {
      await deleteBlob();
    } catch (err) {
      // 412 LeaseIdMissing: someone holds a lease. Break it now (period 0) and delete.
      if (restStatus(err) !== 412 || restCode(err) !== "LeaseIdMissing") throw err;
      await blob.getBlobLeaseClient().breakLease(0);
      await deleteBlob();
    }
  });
  await deleteReplicaContainer(pool, replicaId);
}
