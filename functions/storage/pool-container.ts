/**
 * The blob service and own container of a pool, as seen by the control
 * plane: with the account key or SAS of the pool's connection string, or
 * with the control plane's managed identity (pool-identity.ts). The pool's
 * container is probed for health; its replicas live in containers of their
 * own (replica-container.ts). Agents never get these credentials: they get
 * a SAS scoped to one replica blob.
 */
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { poolIdentity } from "./pool-identity.ts";
import { onPool } from "./storage-failure.ts";

/** Control-plane calls are few and interactive: retry briefly instead of the SDK's minutes-long defaults. */
const RETRY = {
  maxTries: 3,
  retryDelayInMs: 200,
  maxRetryDelayInMs: 2_000,
  tryTimeoutInMs: 30_000,
};

/** How the control plane authenticates to a pool's account. */
export type PoolCredentials =
  | { authKind: "connectionString"; connectionString: string }
  | { authKind: "managedIdentity"; accountUrl: string };

/** What locates a pool's container (a `PoolRecord` is one). */
export type PoolLocation = { name: string; container: string } & PoolCredentials;

/** The pool account's blob service, under the pool's credentials. */
export function poolService(pool: PoolCredentials): BlobServiceClient {
  if (pool.authKind === "connectionString")
    return BlobServiceClient.fromConnectionString(pool.connectionString, { retryOptions: RETRY });
  return new BlobServiceClient(pool.accountUrl, poolIdentity().credential, {
    retryOptions: RETRY,
  });
}

export function poolContainer(pool: PoolLocation): ContainerClient {
  return poolService(pool).getContainerClient(pool.container);
}

/** Prove the pool is usable: create its container if missing. `StorageFailure` when it is not. */
export async function probePool(pool: PoolLocation): Promise<void> {
  await onPool(pool.name, "create container", () => poolContainer(pool).createIfNotExists());
}
