/**
 * Every blob of a pool, as the reconciliation sees it, and the one way it
 * deletes an orphan: conditional on what it checked, so a blob written
 * since (by a writer the check did not know of) is left alone.
 *
 * A pool's blobs live in several containers: each replica alone in a
 * container of its own (replica-container.ts), and whatever else someone
 * put in the pool's own container. So a blob is named by its path in the
 * account, `<container>/<blob name>`, which no two blobs share. A replica
 * container with no blob at all is listed too, as the path `<container>/`:
 * it is a leftover as much as a blob is, and no blob can have that path
 * (a blob name is never empty).
 */
import type { ContainerClient } from "@azure/storage-blob";
import { restCode, restStatus } from "../rest-error.ts";
import { type PoolLocation, poolService } from "./pool-container.ts";
import { isReplicaContainer, replicaContainerName } from "./replica-container.ts";
import { onPool } from "./storage-failure.ts";

/**
 * Containers listed at once: a pool of thousands of replicas is listed in
 * reasonable time, and few enough requests are in flight not to be throttled.
 */
const PARALLEL_LISTINGS = 8;

/** A blob of a pool (or an empty replica container), with what tells whose it is. */
export interface PoolBlob {
  /** Its path in the account, `<container>/<blob name>`; `<container>/` for an empty container. */
  name: string;
  container: string;
  /** Its name in its container; empty for an empty container. */
  blobName: string;
  sizeBytes: number;
  /** Of the blob, or of the container when it is an empty one. */
  lastModified: Date;
  etag: string;
  /** available, leased, expired, breaking or broken (of the container when it is an empty one). */
  leaseState: string;
  /** Metadata keys are lower-case, as Azure returns them. */
  metadata: Record<string, string>;
}

/** The path of blob `blobName` of `container`, as the reconciliation names it. */
export function blobPath(container: string, blobName: string): string {
  return `${container}/${blobName}`;
}

/** Whether the entry stands for an empty replica container rather than a blob. */
export function isEmptyContainer(blob: PoolBlob): boolean {
  return blob.blobName === "";
}

/**
 * List the pool's own container and every replica container of the pool
 * (metadata included), page by page. `StorageFailure` when any of them
 * cannot be listed: half a listing would make the rest look missing.
 */
export async function listPoolBlobs(pool: PoolLocation): Promise<PoolBlob[]> {
  return onPool(pool.name, "list blobs", async () => {
    const service = poolService(pool);
    const replicaContainers: Array<{ name: string; info: ContainerInfo }> = [];
    // Another pool's container may start with the same prefix: only names
    // that are exactly `<prefix><replica id>` are this pool's. (A long pool
    // container name can itself have that form; it is listed once, below.)
    const prefix = replicaContainerName(pool.container, "");
    for await (const c of service.listContainers({ prefix, includeMetadata: true })) {
      if (!isReplicaContainer(pool.container, c.name) || c.name === pool.container) continue;
      replicaContainers.push({
        name: c.name,
        info: {
          lastModified: c.properties.lastModified,
          etag: c.properties.etag,
          leaseState: c.properties.leaseState ?? "available",
          metadata: lowerKeys(c.metadata ?? {}),
        },
      });
    }

    const found = await listContainer(service.getContainerClient(pool.container));
    for (let i = 0; i < replicaContainers.length; i += PARALLEL_LISTINGS) {
      const batch = replicaContainers.slice(i, i + PARALLEL_LISTINGS);
      const listed = await Promise.all(
        batch.map(async ({ name, info }) => {
          let blobs: PoolBlob[];
          try {
            blobs = await listContainer(service.getContainerClient(name));
          } catch (err) {
            // Deleted between the two listings: nothing is left of it to report.
            if (restCode(err) === "ContainerNotFound") return [];
            throw err;
          }
          return blobs.length > 0 ? blobs : [emptyContainer(name, info)];
        }),
      );
      found.push(...listed.flat());
    }
    return found;
  });
}

/** Whether the blob at that path exists now. `StorageFailure` when the pool does not answer. */
export async function poolBlobExists(pool: PoolLocation, path: string): Promise<boolean> {
  const { container, blobName } = splitPath(pool, path);
  return onPool(pool.name, "get blob properties", () =>
    poolService(pool).getContainerClient(container).getBlobClient(blobName).exists(),
  );
}

/** What `deleteCheckedBlob` did. */
export type CheckedDelete = "deleted" | "gone" | "changed";

/**
 * Delete what was checked (a blob and its snapshots), if it is unchanged
 * since: its ETag is the same. When `breakLease`, break its lease at once
 * first. `changed` when it was modified since the check (nothing deleted),
 * `gone` when it no longer exists.
 *
 * An empty replica container is deleted only if it is still empty and
 * its properties, metadata and access policy are unchanged since the check
 * (Delete Container takes no ETag, only a time).
 */
export async function deleteCheckedBlob(
  pool: PoolLocation,
  checked: PoolBlob,
  breakLease: boolean,
): Promise<CheckedDelete> {
  const container = poolService(pool).getContainerClient(checked.container);
  if (isEmptyContainer(checked)) {
    return onPool(pool.name, "delete container", async () => {
      try {
        if (!(await isEmpty(container))) return "changed";
        if (breakLease) await container.getBlobLeaseClient().breakLease(0);
        await container.delete({ conditions: { ifUnmodifiedSince: checked.lastModified } });
        return "deleted";
      } catch (err) {
        if (restStatus(err) === 404) return "gone";
        if (restStatus(err) !== 412 || restCode(err) !== "ConditionNotMet") throw err;
        return "changed";
      }
    });
  }
  const blob = container.getBlobClient(checked.blobName);
  return onPool(pool.name, "delete blob", async () => {
    try {
      if (breakLease) await blob.getBlobLeaseClient().breakLease(0);
      await blob.delete({ deleteSnapshots: "include", conditions: { ifMatch: checked.etag } });
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

/**
 * Delete a replica container of the pool if it holds no blob. `true` when
 * it is gone (deleted now or before), `false` when a blob is there.
 *
 * Between the look and the delete a blob could only appear if pagedisk
 * were making a replica there, and it makes one only for a replica that a
 * record claims: callers remove only containers no record claims.
 */
export async function deleteEmptyReplicaContainer(
  pool: PoolLocation,
  name: string,
): Promise<boolean> {
  if (!isReplicaContainer(pool.container, name))
    throw new Error(`${name} is not a replica container of pool ${pool.name}`);
  const container = poolService(pool).getContainerClient(name);
  return onPool(pool.name, "delete container", async () => {
    try {
      if (!(await isEmpty(container))) return false;
      await container.deleteIfExists();
      return true;
    } catch (err) {
      if (restStatus(err) === 404) return true;
      throw err;
    }
  });
}

/** What a listing of containers says of one, kept for when it turns out empty. */
interface ContainerInfo {
  lastModified: Date;
  etag: string;
  leaseState: string;
  metadata: Record<string, string>;
}

async function listContainer(container: ContainerClient): Promise<PoolBlob[]> {
  const found: PoolBlob[] = [];
  for await (const item of container.listBlobsFlat({ includeMetadata: true })) {
    const p = item.properties;
    found.push({
      name: blobPath(container.containerName, item.name),
      container: container.containerName,
      blobName: item.name,
      sizeBytes: p.contentLength ?? 0,
      lastModified: p.lastModified,
      etag: p.etag,
      leaseState: p.leaseState ?? "available",
      metadata: lowerKeys(item.metadata ?? {}),
    });
  }
  return found;
}

function emptyContainer(name: string, info: ContainerInfo): PoolBlob {
  return { name: blobPath(name, ""), container: name, blobName: "", sizeBytes: 0, ...info };
}

async function isEmpty(container: ContainerClient): Promise<boolean> {
  const page = await container.listBlobsFlat().byPage({ maxPageSize: 1 }).next();
  return page.done === true || page.value.segment.blobItems.length === 0;
}

/**
 * The container and blob name of a path, checked to be the pool's: its own
 * container or one of its replica containers.
 */
function splitPath(pool: PoolLocation, path: string): { container: string; blobName: string } {
  const slash = path.indexOf("/");
  const container = path.slice(0, slash);
  const blobName = path.slice(slash + 1);
  const ours = container === pool.container || isReplicaContainer(pool.container, container);
  if (slash < 0 || blobName === "" || !ours)
    throw new Error(`${path} is not the path of a blob of pool ${pool.name}`);
  return { container, blobName };
}

function lowerKeys(metadata: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k.toLowerCase(), v]));
}
