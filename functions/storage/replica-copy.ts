/**
 * Server-side copies of replica blobs (Copy Blob), for volumes that no
 * writer holds: the storage service copies a DETACHED volume's ONLINE
 * replica onto a replica being resynced or rebuilt, and the control plane
 * only starts, polls and, when the volume gets a writer, stops the copy
 * (health/repair-detached.ts).
 *
 * The target is leased under the volume's copy lease for the whole copy:
 * starting a copy needs that lease id, so once an attach has broken it no
 * late start can land on a blob that now has a writer. A copy can be
 * stopped only with the blob's current lease id (the attach's).
 *
 * The source is read through a read-only SAS the control plane signs for
 * that one blob, valid for as long as the copy may take
 * (`copySourceSasLifetime`): a copy between accounts runs in the
 * background at no promised speed, and one whose source SAS ends before it
 * does fails, to be started again from the beginning; a fixed hour would
 * never see a large replica through. A pool whose connection string is
 * itself a SAS lends that SAS, which stays inside Azure Storage. The
 * service records the source URL in the target's properties, which the
 * volume's writers (and the account's owners) can read; a writer may read
 * that replica anyway.
 * The copy carries the target's own metadata, never the source's offline
 * marks.
 */
import type { BlobBeginCopyFromUrlPollState } from "@azure/storage-blob";
import {
  markedOffline,
  OFFLINE_EPOCH_KEY,
  OFFLINE_KEY,
  REPLICA_KEY,
  VOLUME_KEY,
} from "../../contract/replica-metadata.ts";
import { restCode, restStatus } from "../rest-error.ts";
import type { PoolLocation } from "./pool-container.ts";
import { replicaBlob, replicaUri } from "./replica-blobs.ts";
import { replicaSasExpiry, signedReplicaUrl } from "./replica-sas.ts";
import { onPool } from "./storage-failure.ts";

/** The least a copy's source SAS lives, however small the blob. */
export const MIN_COPY_SOURCE_SAS_LIFETIME_MS = 60 * 60 * 1000;
/**
 * The most: a user delegation key (what signs a managed-identity pool's
 * SAS) lives at most 7 days, less a margin for the clocks.
 */
export const MAX_COPY_SOURCE_SAS_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000 - 60 * 60 * 1000;
/**
 * The slowest copy the lifetime allows for, in bytes per second. At this
 * rate the largest page blob (8 TiB) takes about 6 days, within the most.
 */
export const COPY_RATE_FLOOR = 16 * 1024 * 1024;

/** How long the source SAS of a copy of `sizeBytes` lives: an hour, plus the copy at the floor rate. */
export function copySourceSasLifetime(sizeBytes: number): number {
  const ms = MIN_COPY_SOURCE_SAS_LIFETIME_MS + Math.ceil((sizeBytes / COPY_RATE_FLOOR) * 1000);
  return Math.min(MAX_COPY_SOURCE_SAS_LIFETIME_MS, ms);
}

export type CopyStatus = "pending" | "success" | "failed" | "aborted";

/** Where a replica's copy stands, as the target blob's properties say. */
export interface ReplicaCopyState {
  /** The id of the last copy onto the blob; undefined if it never had one. */
  copyId: string | undefined;
  status: CopyStatus | undefined;
  copiedBytes: number | undefined;
  totalBytes: number | undefined;
  /** The service's words on a failed copy. */
  description: string | undefined;
}

/** One replica blob, by pool and id. */
export interface ReplicaBlobRef {
  pool: PoolLocation;
  id: string;
}

/**
 * Start copying `source` onto `target` (which exists, leased under
 * `leaseId`); both hold `sizeBytes`. A copy already pending there (this
 * call repeated after a crash) is adopted rather than refused. Resolves
 * with the copy's state right after the start: a copy within one account
 * may already be done.
 */
export async function startReplicaCopy(
  volume: string,
  source: ReplicaBlobRef,
  target: ReplicaBlobRef,
  leaseId: string,
  sizeBytes: number,
): Promise<ReplicaCopyState> {
  // Signed by the wall clock, not the control plane's: the storage service checks it at once, by its own.
  const sourceUrl = await copySourceUrl(volume, source, new Date(), copySourceSasLifetime(sizeBytes));
  const blob = replicaBlob(target.pool, volume, target.id);
  return onPool(target.pool.name, "start copy", async () => {
    try {
      const poller = await blob.beginCopyFromURL(sourceUrl, {
        conditions: { leaseId },
        metadata: { [VOLUME_KEY]: volume, [REPLICA_KEY]: target.id },
      });
      // After the start the poller knows the copy id, and a result only if the copy is done.
      const started = poller.getOperationState() as BlobBeginCopyFromUrlPollState;
      return {
        copyId: started.copyId,
        status: started.isCompleted ? "success" : "pending",
        copiedBytes: undefined,
        totalBytes: undefined,
        description: undefined,
      };
    } catch (err) {
      if (restStatus(err) !== 409 || restCode(err) !== "PendingCopyOperation") throw err;
      return stateOf(await blob.getProperties());
    }
  });
}

/** The state of the last copy onto a replica's blob. */
export async function replicaCopyState(
  volume: string,
  target: ReplicaBlobRef,
): Promise<ReplicaCopyState> {
  const blob = replicaBlob(target.pool, volume, target.id);
  return onPool(target.pool.name, "read copy state", async () => stateOf(await blob.getProperties()));
}

/**
 * Stop copy `copyId` onto a replica's blob, held now under `leaseId`. A
 * copy no longer pending is left as it is. A stopped copy leaves the blob
 * empty (Abort Copy Blob): it is given back its `sizeBytes`, as a blob a
 * writer can copy onto. Resolves with whether a copy was stopped.
 */
export async function stopReplicaCopy(
  volume: string,
  target: ReplicaBlobRef,
  copyId: string,
  leaseId: string,
  sizeBytes: number,
): Promise<boolean> {
  const blob = replicaBlob(target.pool, volume, target.id);
  return onPool(target.pool.name, "stop copy", async () => {
    try {
      await blob.abortCopyFromURL(copyId, { conditions: { leaseId } });
    } catch (err) {
      // 409 NoPendingCopyOperation: done or failed already; 404: no blob left to copy onto.
      if (restStatus(err) === 409 || restStatus(err) === 404) return false;
      throw err;
    }
    const props = await blob.getProperties();
    if (props.contentLength !== sizeBytes) await blob.resize(sizeBytes, { conditions: { leaseId } });
    return true;
  });
}

/**
 * Take the ids of `inSync` out of the offline marks (agent/control/offline-marks.ts)
 * on a replica's blob, which no one leases now. Resolves with whether the
 * metadata changed. The write is conditional on the blob not changing since
 * it was read.
 */
export async function clearOfflineMarks(
  volume: string,
  replica: ReplicaBlobRef,
  inSync: ReadonlySet<string>,
): Promise<boolean> {
  const blob = replicaBlob(replica.pool, volume, replica.id);
  return onPool(replica.pool.name, "clear offline marks", async () => {
    const props = await blob.getProperties();
    const metadata = { ...props.metadata };
    const named = markedOffline(metadata);
    const kept = named.filter((id) => !inSync.has(id));
    if (kept.length === named.length) return false;
    if (kept.length > 0) metadata[OFFLINE_KEY] = kept.join(",");
    else {
      delete metadata[OFFLINE_KEY];
      delete metadata[OFFLINE_EPOCH_KEY];
    }
    await blob.setMetadata(metadata, { conditions: { ifMatch: props.etag! } });
    return true;
  });
}

async function copySourceUrl(
  volume: string,
  source: ReplicaBlobRef,
  now: Date,
  lifetimeMs: number,
): Promise<string> {
  const uri = replicaUri(source.pool, volume, source.id);
  const expiresAt = replicaSasExpiry(now, lifetimeMs);
  const signed = await signedReplicaUrl(source.pool, volume, source.id, uri, now, expiresAt, "read");
  // Unsigned: the pool's connection string is a SAS, which the client's URL carries.
  return signed ?? replicaBlob(source.pool, volume, source.id).url;
}

function stateOf(props: {
  copyId?: string;
  copyStatus?: string;
  copyProgress?: string;
  copyStatusDescription?: string;
}): ReplicaCopyState {
  // "<bytes copied>/<bytes in all>"
  const progress = /^(\d+)\/(\d+)$/.exec(props.copyProgress ?? "");
  return {
    copyId: props.copyId,
    status: props.copyStatus as CopyStatus | undefined,
    copiedBytes: progress ? Number(progress[1]) : undefined,
    totalBytes: progress ? Number(progress[2]) : undefined,
    description: props.copyStatusDescription,
  };
}
