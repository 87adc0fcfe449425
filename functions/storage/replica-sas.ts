/**
 * What a writer gets to reach a replica: the blob's URL with a SAS for that
 * one blob, read and write but not delete (read only for a copy's source),
 * valid for at most an hour
 * (`PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS`, settings.ts).
 * Signed here, with the pool's account key (a service SAS) or, for a
 * managed-identity pool, with a user delegation key the account gave the
 * control plane's identity (a user delegation SAS); neither key ever
 * leaves the control plane. Agents refresh the SAS through their desired
 * state.
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
import { onPool } from "./storage-failure.ts";

/** The longest a SAS may live, and how long it lives unless told otherwise. */
export const MAX_REPLICA_SAS_LIFETIME_MS = 60 * 60 * 1000;
/**
 * The shortest: agents fetch a new SAS 15 minutes before the current one
 * ends, so anything under that is renewed on every full fetch of the
 * desired state (a few seconds apart), but a minute still rides out a
 * control plane that misses a few of them.
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
  permissions: "rw" | "r" = "rw",
): Promise<string | undefined> {
  const url = new URL(uri);
  const values: BlobSASSignatureValues = {
    containerName: pool.container,
    blobName: replicaBlobName(volume, replicaId),
    permissions: BlobSASPermissions.parse(permissions),
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
