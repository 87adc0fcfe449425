/**
 * Shared setup of the page blob tests: one Azurite per test file, a container,
 * and an "outside" client (the official SDK) that plays the other party —
 * the control plane breaking a lease, an operator deleting a blob.
 */
import { randomUUID } from "node:crypto";
import {
  BlobSASPermissions,
  BlobServiceClient,
  type ContainerClient,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { type OpenOptions, openPageBlob } from "../../agent/pageblob/connect.ts";
import type { PageBlob } from "../../agent/pageblob/page-blob.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";

export interface Fixture {
  azurite: Azurite;
  container: ContainerClient;
  /** A fresh blob name in the container. */
  name(): string;
  /** Blob URL with a SAS minted by the SDK (the agent's normal mode). */
  sasUrl(blob: string, opts?: { permissions?: string; expiresOn?: Date; startsOn?: Date }): string;
  /** Our client for `blob` through its SAS URL. */
  open(blob: string, opts?: OpenOptions & { endpoint?: string }): PageBlob;
  close(): Promise<void>;
}

/** Instant sleeps: retry tests assert what was retried, not how long it took. */
export const instantClock = { now: () => Date.now(), sleep: async () => {} };

export async function setupFixture(): Promise<Fixture> {
  const azurite = await startAzurite();
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  const container = service.getContainerClient(`c${randomUUID().slice(0, 8)}`);
  await container.create();
  const key = new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey);
  const opened: PageBlob[] = [];
  const sasUrl: Fixture["sasUrl"] = (blob, opts = {}) => {
    const sas = generateBlobSASQueryParameters(
      {
        containerName: container.containerName,
        blobName: blob,
        permissions: BlobSASPermissions.parse(opts.permissions ?? "rcwd"),
        startsOn: opts.startsOn ?? new Date(Date.now() - 60_000),
        expiresOn: opts.expiresOn ?? new Date(Date.now() + 3_600_000),
        version: "2025-11-05",
      },
      key,
    ).toString();
    return `${azurite.blobEndpoint}/${container.containerName}/${blob}?${sas}`;
  };
  return {
    azurite,
    container,
    name: () => `disk-${randomUUID().slice(0, 8)}.vhd`,
    sasUrl,
    open(blob, opts = {}) {
      let url = sasUrl(blob);
      if (opts.endpoint) url = url.replace(azurite.blobEndpoint, opts.endpoint);
      const pb = openPageBlob(url, { clock: instantClock, ...opts });
      opened.push(pb);
      return pb;
    },
    async close() {
      await Promise.allSettled(opened.map((pb) => pb.close()));
      await azurite.dispose();
    },
  };
}

/** The fixture with a fault proxy in front of its Blob endpoint; `close()` stops both. */
export interface ProxiedFixture extends Fixture {
  proxy: FaultProxy;
}

export async function setupProxiedFixture(): Promise<ProxiedFixture> {
  const fx = await setupFixture();
  const proxy = await startFaultProxy(fx.azurite.blobEndpoint).catch(async (err: unknown) => {
    await fx.close();
    throw err;
  });
  return {
    ...fx,
    proxy,
    async close() {
      await proxy.close();
      await fx.close();
    },
  };
}

/** `n` bytes of a recognisable pattern. */
export function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}
