/**
 * What a writer gets to reach a replica: the blob's URL with a SAS for that
 * one blob, valid for at most 15 minutes
 * (`PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS`, settings.ts). Agents refresh it
 * through their desired state.
 *
 * - A pool with an account key signs a service SAS bound to the stored
 *   access policy named after the writer's lease id (`si`), which grants
 *   read and write; the SAS itself says only when it starts and ends. The
 *   control plane removes that policy whenever the lease changes hands
 *   (replica-container.ts), and the SAS stops working then, not at expiry.
 * - A managed-identity pool has no account key: it signs a user delegation
 *   SAS (read and write) with a key the account gave the control plane's
 *   identity. Azure offers no way to revoke one alone, so its holder keeps
 *   its power until it expires.
 *
 * Neither key ever leaves the control plane. A copy's source gets a plain
 * read-only SAS; that one goes to the storage service, never to an agent.
 */
import {
  type BlobSASSignatureValues,
  BlobSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  type SASQueryParameters,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { type PoolLocation, poolService } from "./pool-container.ts";
import { poolIdentity } from "./pool-identity.ts";
import { replicaBlobName } from "./replica-blobs.ts";
import { canRevoke, replicaContainerName } from "./replica-container.ts";
import { onPool } from "./storage-failure.ts";

/**
 * The longest a SAS may live, and how long it lives unless told otherwise:
 * on a managed-identity pool, how long a fenced node may still reach the
 * blob. Agents fetch a new one when half of it is left.
 */
export const MAX_REPLICA_SAS_LIFETIME_MS = 15 * 60 * 1000;
/**
 * The shortest: a minute still rides out a control plane that misses a few
 * fetches of the desired state.
 */
export const MIN_REPLICA_SAS_LIFETIME_MS = 60 * 1000;
/**
 * SAS version of user delegation SAS tokens, pinned rather than the SDK's
 * newest: the string to sign changes with the version, and this is the
 * newest one Azurite (3.35) verifies too, so the tests prove what Azure gets.
 */
const DELEGATION_SAS_VERSION = "2025-07-05";
/** Signed as valid from a little before now, so that a storage clock behind ours does not refuse it. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;

/** When a SAS signed at `now` ends: whole seconds, since that is all a SAS's `se` can say. */
export function replicaSasExpiry(now: Date, lifetime: number): Date {
  return new Date(Math.floor((now.getTime() + lifetime) / 1000) * 1000);
}

/**
 * Who a SAS is for: the writer holding lease `writer`, or a copy that only
 * reads. A writer's SAS is bound to its lease's policy unless `bound` is
 * false (the policy may not be in effect yet): then it carries read and
 * write itself and cannot be revoked, so it must be short.
 */
export type ReplicaAccess = { writer: string; bound?: boolean } | "read";

/**
 * The replica blob's URL (`uri`, without query) with a SAS valid until
 * `expiresAt`, or undefined when the pool's credentials cannot sign (a
 * SAS connection string: handing that SAS on would give away the account).
 * A managed-identity pool may need a delegation key from its account
 * first: `StorageFailure` if that fails.
 */
export async function signedReplicaUrl(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
  uri: string,
  now: Date,
  expiresAt: Date,
  access: ReplicaAccess,
): Promise<string | undefined> {
  const url = new URL(uri);
  // A writer's SAS names the policy of its lease, which holds the permissions, where the pool can
  // keep one; a policy and a SAS may not both say the same thing.
  const bound = access !== "read" && access.bound !== false && canRevoke(pool);
  const values: BlobSASSignatureValues = {
    containerName: replicaContainerName(pool.container, replicaId),
    blobName: replicaBlobName(volume, replicaId),
    ...(bound
      ? { identifier: access.writer }
      : { permissions: BlobSASPermissions.parse(access === "read" ? "r" : "rw") }),
    startsOn: new Date(now.getTime() - CLOCK_SKEW_MS),
    expiresOn: expiresAt,
    // Plain HTTP only where the pool itself is plain HTTP (Azurite).
    protocol: url.protocol === "http:" ? SASProtocol.HttpsAndHttp : SASProtocol.Https,
  };
  const sas = await sign(pool, values, now);
  if (!sas) return undefined;
  url.search = sas.toString();
  return url.toString();
}

async function sign(
  pool: PoolLocation,
  values: BlobSASSignatureValues,
  now: Date,
): Promise<SASQueryParameters | undefined> {
  const service = poolService(pool);
  if (pool.authKind === "connectionString") {
    // The SDK parsed the connection string: an account key (or UseDevelopmentStorage) gives a
    // shared key credential; a SAS string gives none, and nothing here can sign.
    const { credential } = service;
    if (!(credential instanceof StorageSharedKeyCredential)) return undefined;
    return generateBlobSASQueryParameters(values, credential);
  }
  const fetchKey = (startsOn: Date, expiresOn: Date) =>
    onPool(pool.name, "get user delegation key", () =>
      service.getUserDelegationKey(startsOn, expiresOn),
    );
  let key = await poolIdentity().delegationKeys.get(pool.accountUrl, now, fetchKey);
  // The service refuses a user delegation SAS that outlives its key. The cached key outlives
  // any agent's SAS (the cache renews well before); a copy's source SAS may need days, so it
  // gets a key of its own, asked for just as long.
  if (values.expiresOn! > key.signedExpiresOn) {
    key = await fetchKey(new Date(now.getTime() - CLOCK_SKEW_MS), values.expiresOn!);
  }
  return generateBlobSASQueryParameters(
    { ...values, version: DELEGATION_SAS_VERSION },
    key,
    service.accountName,
  );
}
