/**
 * Every replica blob lives in a container of its own, named
 * `<pool container>-<replica id>`, so that the container's stored access
 * policy governs that one blob and nothing else. That policy is how a
 * writer's storage access is taken back:
 *
 * - The agent's SAS for a replica is bound to a policy named after the
 *   volume's lease id (`si=<lease id>`, replica-sas.ts). The policy grants
 *   read and write; the SAS carries only its own short lifetime.
 * - Whenever the control plane takes a replica's lease for a new writer, it
 *   first replaces the container's policies with that one lease id's
 *   (`admitWriter`); whenever it drops the lease, it removes them all
 *   (`revokeWriters`). Either way every SAS an earlier writer holds stops
 *   working: at once on Azurite, within 30 s on Azure.
 *
 * Why a policy and not the lease alone: write permission on a page blob
 * also allows Lease Blob and Set Blob Properties, so a fenced node that
 * kept its SAS could break the new writer's lease and write without one,
 * or resize the blob away. Without a usable SAS it can do nothing.
 *
 * Stored access policies exist for service SAS only, and Set Container ACL
 * takes the account key: a managed-identity pool (user delegation SAS)
 * cannot revoke per replica, and its writers' power ends only when their
 * SAS expires (at most 15 minutes, replica-sas.ts). `canRevoke` says which
 * kind a pool is.
 */
import type { ContainerClient } from "@azure/storage-blob";
import { StorageSharedKeyCredential } from "@azure/storage-blob";
import { REPLICA_KEY, VOLUME_KEY } from "../../contract/replica-metadata.ts";
import { restStatus } from "../rest-error.ts";
import { type PoolLocation, poolService } from "./pool-container.ts";
import { onPool } from "./storage-failure.ts";

/**
 * The longest prefix kept of the pool's container name: the replica id (12
 * hex digits) and its hyphen take 13 of a container name's 63 characters.
 */
const PREFIX_MAX = 50;

/** The name of the container holding replica `replicaId` of a pool whose container is `poolContainer`. */
export function replicaContainerName(poolContainer: string, replicaId: string): string {
  const prefix = poolContainer.slice(0, PREFIX_MAX).replace(/-+$/, "");
  return `${prefix}-${replicaId}`;
}

/** Whether `name` is a replica container of the pool whose container is `poolContainer`. */
export function isReplicaContainer(poolContainer: string, name: string): boolean {
  const prefix = replicaContainerName(poolContainer, "");
  return name.startsWith(prefix) && /^[0-9a-f]{12}$/.test(name.slice(prefix.length));
}

/** The replica's container, under the pool's credentials. */
export function replicaContainer(pool: PoolLocation, replicaId: string): ContainerClient {
  return poolService(pool).getContainerClient(replicaContainerName(pool.container, replicaId));
}

/**
 * Whether the pool's writers can be revoked: the control plane signs their
 * SAS with the account key (and may set stored access policies). A
 * managed-identity pool cannot; neither can a pool registered with a SAS
 * connection string, which signs nothing.
 */
export function canRevoke(pool: PoolLocation): boolean {
  return (
    pool.authKind === "connectionString" &&
    poolService(pool).credential instanceof StorageSharedKeyCredential
  );
}

/**
 * Make the replica's container, private and with no policy (so no SAS
 * bound to one works yet), tagged with the volume and replica it is for.
 * Existing already is success.
 */
export async function ensureReplicaContainer(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
): Promise<void> {
  await onPool(pool.name, "create container", () =>
    replicaContainer(pool, replicaId).createIfNotExists({
      metadata: { [VOLUME_KEY]: volume, [REPLICA_KEY]: replicaId },
    }),
  );
}

/**
 * Let the writer holding `leaseId` in, and nobody else: the container's
 * policies become exactly one, named `leaseId`, granting read and write.
 * A pool that cannot revoke has nothing to do.
 *
 * Unless `newLease` (an id just drawn, which no SAS can name yet), the
 * policies are read first and left alone when they are that already (a
 * retry, a repair taking the lease of a replica again): Azure may take up
 * to 30 s to apply a policy it is given, and whether it counts an identical
 * one as new is not documented, so a writer's SAS in use is never put at
 * risk for nothing.
 */
export async function admitWriter(
  pool: PoolLocation,
  replicaId: string,
  leaseId: string,
  newLease: boolean,
): Promise<void> {
  if (!canRevoke(pool)) return;
  const container = replicaContainer(pool, replicaId);
  if (!newLease) {
    const held = await onPool(pool.name, "get container policy", () => container.getAccessPolicy());
    const ids = held.signedIdentifiers;
    if (ids.length === 1 && ids[0]!.id === leaseId && ids[0]!.accessPolicy?.permissions === "rw") return;
  }
  await onPool(pool.name, "set container policy", () =>
    container.setAccessPolicy(undefined, [{ id: leaseId, accessPolicy: { permissions: "rw" } }]),
  );
}

/**
 * Take every writer's storage access away: the container keeps no policy.
 * A container already gone is success.
 */
export async function revokeWriters(pool: PoolLocation, replicaId: string): Promise<void> {
  if (!canRevoke(pool)) return;
  await onPool(pool.name, "clear container policy", async () => {
    try {
      await replicaContainer(pool, replicaId).setAccessPolicy(undefined, []);
    } catch (err) {
      if (restStatus(err) !== 404) throw err;
    }
  });
}

/** Delete the replica's container (and whatever is left in it). Gone already is success. */
export async function deleteReplicaContainer(pool: PoolLocation, replicaId: string): Promise<void> {
  await onPool(pool.name, "delete container", () =>
    replicaContainer(pool, replicaId).deleteIfExists(),
  );
}
