/**
 * What a writer gets to reach a replica: the blob's URL with a service SAS
 * for that one blob, read and write but not delete, valid for at most an
 * hour. It is signed here with the pool's account key, which never leaves
 * the control plane. Agents refresh it through their desired state.
 */
import {
  BlobSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { accountKeyOf } from "./connection-string.ts";
import type { PoolLocation } from "./pool-container.ts";
import { replicaBlobName } from "./replica-blobs.ts";

/** A SAS lives this long; the agent asks for a new one well before it ends. */
export const REPLICA_SAS_LIFETIME_MS = 60 * 60 * 1000;
/** Signed as valid from a little before now, so that a storage clock behind ours does not refuse it. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;

/** When a SAS signed at `now` ends: whole seconds, since that is all a SAS's `se` can say. */
export function replicaSasExpiry(now: Date): Date {
  return new Date(Math.floor((now.getTime() + REPLICA_SAS_LIFETIME_MS) / 1000) * 1000);
}

/**
 * The replica blob's URL (`uri`, without query) with a SAS valid until
 * `expiresAt`, or undefined when the pool's credentials cannot sign (a
 * SAS connection string: handing that SAS on would give away the account).
 */
export function signedReplicaUrl(
  pool: PoolLocation,
  volume: string,
  replicaId: string,
  uri: string,
  now: Date,
  expiresAt: Date,
): string | undefined {
  const key = accountKeyOf(pool.connectionString);
  if (!key) return undefined;
  const url = new URL(uri);
  const sas = generateBlobSASQueryParameters(
    {
      containerName: pool.container,
      blobName: replicaBlobName(volume, replicaId),
      permissions: BlobSASPermissions.parse("rw"),
      startsOn: new Date(now.getTime() - CLOCK_SKEW_MS),
      expiresOn: expiresAt,
      // Plain HTTP only where the pool itself is plain HTTP (Azurite).
      protocol: url.protocol === "http:" ? SASProtocol.HttpsAndHttp : SASProtocol.Https,
    },
    new StorageSharedKeyCredential(key.account, key.accountKey),
  );
  url.search = sas.toString();
  return url.toString();
}
