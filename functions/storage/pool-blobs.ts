/**
 * Every blob in a pool's container, as the reconciliation sees it, and the
 * one way it deletes an orphan: conditional on the ETag it checked, so a
 * blob written since (by a writer the check did not know of) is left alone.
 */
import { restCode, restStatus } from "../rest-error.ts";
import { type PoolLocation, poolContainer } from "./pool-container.ts";
import { onPool } from "./storage-failure.ts";

/** A blob of a pool's container, with what tells whose it is. */
export interface PoolBlob {
  name: string;
  sizeBytes: number;
  lastModified: Date;
  etag: string;
  /** available, leased, expired, breaking or broken. */
  leaseState: string;
  /** Metadata keys are lower-case, as Azure returns them. */
  metadata: Record<string, string>;
}

/** List the pool's container (metadata included). `StorageFailure` when it cannot be listed. */
export async function listPoolBlobs(pool: PoolLocation): Promise<PoolBlob[]> {
  return onPool(pool.name, "list blobs", async () => {
    const found: PoolBlob[] = [];
    for await (const item of poolContainer(pool).listBlobsFlat({ includeMetadata: true })) {
      const p = item.properties;
      found.push({
        name: item.name,
        sizeBytes: p.contentLength ?? 0,
        lastModified: p.lastModified,
        etag: p.etag,
        leaseState: p.leaseState ?? "available",
        metadata: lowerKeys(item.metadata ?? {}),
      });
    }
    return found;
  });
}

/** Whether a blob of that name exists now. `StorageFailure` when the pool does not answer. */
export async function poolBlobExists(pool: PoolLocation, name: string): Promise<boolean> {
  return onPool(pool.name, "get blob properties", () =>
    poolContainer(pool).getBlobClient(name).exists(),
  );
}

/** What `deleteCheckedBlob` did. */
export type CheckedDelete = "deleted" | "gone" | "changed";

/**
 * Delete `name` (and its snapshots) if its ETag is still `etag`; when
 * `breakLease`, break its lease at once first. `changed` when the blob was
 * modified since the check (nothing deleted), `gone` when it no longer exists.
 */
export async function deleteCheckedBlob(
  pool: PoolLocation,
  name: string,
  etag: string,
  breakLease: boolean,
): Promise<CheckedDelete> {
  const blob = poolContainer(pool).getBlobClient(name);
  return onPool(pool.name, "delete blob", async () => {
    try {
      if (breakLease) await blob.getBlobLeaseClient().breakLease(0);
      await blob.delete({ deleteSnapshots: "include", conditions: { ifMatch: etag } });
      return "deleted";
    } catch (err) {
      if (restStatus(err) === 404) return "gone";
      // 412 Lease*: leased since the check; that is a failure, thrown.
      if (restStatus(err) !== 412 || restCode(err) !== "ConditionNotMet") throw err;
      // Written since the check, or (Azurite answers so) deleted since.
      return (await blob.exists()) ? "changed" : "gone";
    }
  });
}

function lowerKeys(metadata: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k.toLowerCase(), v]));
}
