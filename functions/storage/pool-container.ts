/**
 * The container of a pool, as seen by the control plane (account key or
 * SAS from the pool's connection string). Agents never get these
 * credentials: they get a SAS scoped to one volume's blobs.
 */
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { onPool } from "./storage-failure.ts";

/** Control-plane calls are few and interactive: retry briefly instead of the SDK's minutes-long defaults. */
const RETRY = {
  maxTries: 3,
  retryDelayInMs: 200,
  maxRetryDelayInMs: 2_000,
  tryTimeoutInMs: 30_000,
};

/** What locates a pool's container. */
export interface PoolLocation {
  name: string;
  connectionString: string;
  container: string;
}

export function poolContainer(pool: PoolLocation): ContainerClient {
  return BlobServiceClient.fromConnectionString(pool.connectionString, {
    retryOptions: RETRY,
  }).getContainerClient(pool.container);
}

/** Prove the pool is usable: create its container if missing. `StorageFailure` when it is not. */
export async function probePool(pool: PoolLocation): Promise<void> {
  await onPool(pool.name, "create container", () => poolContainer(pool).createIfNotExists());
}
