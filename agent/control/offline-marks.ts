/**
 * The durable offline mark of a replicated volume (design: "Durable offline
 * mark"): blob metadata on every ONLINE replica naming the replicas that
 * miss writes, so that after a crash of this node the next writer (this
 * agent again, or another) never reads from a stale replica, whatever the
 * control plane has recorded meanwhile.
 *
 *   pagediskoffline       comma-separated replica ids missing writes
 *   pagediskofflineepoch  the epoch that marked them
 *
 * Set Blob Metadata replaces all metadata, so every write carries the
 * blob's other metadata as read at open (pagediskvolume, pagediskreplica).
 *
 * Concurrency: writes are serialized, so two replicas going offline at once
 * end with both named; each write sends the whole current set.
 */
import { OFFLINE_EPOCH_KEY, OFFLINE_KEY } from "../../contract/replica-metadata.ts";
import type { Logger } from "../log.ts";
import type { BlobMetadata, PageBlob } from "../pageblob/page-blob.ts";

/** One replica blob the marks are written on, and its metadata as read at open. */
export interface MarkedBlob {
  blob: PageBlob;
  metadata: BlobMetadata;
}

export interface OfflineMarksOptions {
  epoch: number;
  leaseId: string;
  /** Ids already named at open (by any replica's metadata). */
  marked: Iterable<string>;
  log: Logger;
}

export class OfflineMarks {
  readonly #blobs = new Map<string, MarkedBlob>();
  readonly #marked: Set<string>;
  readonly #o: OfflineMarksOptions;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: OfflineMarksOptions) {
    this.#o = opts;
    this.#marked = new Set(opts.marked);
  }

  /** Ids named as missing writes now. */
  get marked(): ReadonlySet<string> {
    return this.#marked;
  }

  /** Write marks on `id`'s blob from now on (a replica that was opened or added). */
  add(id: string, blob: MarkedBlob): void {
    this.#blobs.set(id, blob);
  }

  /**
   * `id` left the volume: no more marks on its blob, and, if it was named,
   * the marks are written without it on the replicas of `online`, so that
   * no survivor names a replica that no longer exists.
   */
  async forget(id: string, online: readonly string[]): Promise<void> {
    this.#blobs.delete(id);
    if (!this.#marked.delete(id)) return;
    await this.#write(online, `drop the offline mark of retired replica ${id}`);
  }

  /**
   * `replica` misses writes: name it on every replica of `online`. Resolves
   * once at least one of them has the mark (one that cannot be reached is
   * failing too and is the engine's to take offline); rejects when none
   * took it, or when one refused the lease (the volume is fenced).
   */
  offline(replica: string, online: readonly string[]): Promise<void> {
    this.#marked.add(replica);
    return this.#write(online, `mark ${replica} offline`);
  }

  /** `replica` is in sync again: write the marks without it on every replica of `online`. */
  online(replica: string, online: readonly string[]): Promise<void> {
    this.#marked.delete(replica);
    return this.#write(online, `clear the offline mark of ${replica}`);
  }

  /** Write the current marks on the replicas of `targets`, now (after the writes queued before). */
  #write(targets: readonly string[], what: string): Promise<void> {
    const run = this.#queue.then(() => this.#writeNow(targets, what));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #writeNow(targets: readonly string[], what: string): Promise<void> {
    const { epoch, leaseId, log } = this.#o;
    const ids = [...this.#marked].sort();
    const written = targets.flatMap((id) => {
      const target = this.#blobs.get(id);
      return target ? [{ id, target }] : [];
    });
    if (written.length === 0) throw new Error(`cannot ${what}: no online replica to write it on`);
    const results = await Promise.allSettled(
      written.map(({ target }) => {
        const metadata: BlobMetadata = { ...target.metadata };
        delete metadata[OFFLINE_KEY];
        delete metadata[OFFLINE_EPOCH_KEY];
        if (ids.length > 0) {
          metadata[OFFLINE_KEY] = ids.join(",");
          metadata[OFFLINE_EPOCH_KEY] = String(epoch);
        }
        return target.blob.setMetadata(metadata, { leaseId });
      }),
    );
    const failed = results.flatMap((r, i) =>
      r.status === "rejected" ? [{ id: written[i]!.id, err: r.reason as unknown }] : [],
    );
    const fenced = failed.find((f) => (f.err as { code?: string }).code === "LeaseLost");
    if (fenced) throw fenced.err;
    for (const f of failed) log.warn({ replica: f.id, err: f.err }, `could not ${what} on this replica`);
    if (failed.length === written.length) throw failed[0]!.err;
  }
}
