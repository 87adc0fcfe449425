/**
 * The page blob backend: a BlockDevice straight over one page blob. read is
 * Get Blob, write is Put Page, trim and writeZeroes are Clear Pages,
 * blockStatus is Get Page Ranges; all of them carry the lease id, reads too,
 * so that a fenced writer cannot read the new writer's data either. Every
 * write is durable when the service acknowledges it, so flush has nothing to
 * do.
 *
 * It takes requests as page blobs do (512-aligned, writes of at most 4 MiB);
 * the layers above split and align. Storage failures reject with the
 * StorageError as is, for the layers above to map (throttle pause, failure
 * state); misuse rejects with BlockError.
 *
 * Concurrency: requests are independent and run in parallel; the connection
 * pool bounds how many are on the wire. close() waits for the ones in flight.
 */
import { type BlockDevice, BlockError, type Extent, type ZeroOptions } from "../nbd/device.ts";
import { MAX_PUT_PAGE, PAGE_SIZE, type PageBlob } from "../pageblob/page-blob.ts";

/** Largest range one blockStatus call asks Get Page Ranges about (it may answer less). */
export const DEFAULT_STATUS_LIMIT = 1024 * 1024 * 1024;

export interface PageBlobBackendOptions {
  readOnly?: boolean;
  /** Sent with every write; required once anyone holds a lease on the blob. */
  leaseId?: string | undefined;
  /** Cap of one Get Page Ranges request; fragmented multi-GiB ranges can time out. */
  statusLimit?: number;
  /** Close the PageBlob (drop its pool reference) with the device. Default true. */
  ownsBlob?: boolean;
}

export class PageBlobBackend implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSizes = { minimum: PAGE_SIZE, preferred: 4096, maximum: MAX_PUT_PAGE };
  // No cache here: every connection reads the service, so all see one view.
  readonly canMultiConn = true;
  readonly blob: PageBlob;
  readonly #leaseId: string | undefined;
  readonly #statusLimit: number;
  readonly #ownsBlob: boolean;
  readonly #inflight = new Set<Promise<unknown>>();
  #closed = false;

  /** Open the device over `blob`, learning its size from Get Blob Properties. */
  static async open(blob: PageBlob, opts: PageBlobBackendOptions = {}): Promise<PageBlobBackend> {
    const props = await blob.properties();
    return new PageBlobBackend(blob, props.size, opts);
  }

  constructor(blob: PageBlob, size: number, opts: PageBlobBackendOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 0 || size % PAGE_SIZE !== 0) {
      throw new RangeError(`page blob size must be a multiple of ${PAGE_SIZE}, got ${size}`);
    }
    this.blob = blob;
    this.size = size;
    this.readOnly = opts.readOnly ?? false;
    this.#leaseId = opts.leaseId;
    this.#statusLimit = Math.max(PAGE_SIZE, opts.statusLimit ?? DEFAULT_STATUS_LIMIT);
    this.#ownsBlob = opts.ownsBlob ?? true;
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.#check(offset, length, false);
    // Only a buffer of exactly the length is ours to fill (the contract's rule); else allocate.
    // A writer reads under its lease too: once fenced, reads fail like writes (EIO), never newer data.
    return this.#track(
      this.blob.read(offset, length, into?.length === length ? into : undefined, {
        leaseId: this.#leaseId,
      }),
    );
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#check(offset, data.length, true);
    if (data.length > MAX_PUT_PAGE)
      throw new BlockError("EINVAL", `write of ${data.length} bytes exceeds 4 MiB`);
    if (data.length === 0) return;
    await this.#track(this.blob.putPages(offset, data, { leaseId: this.#leaseId }));
  }

  async flush(): Promise<void> {
    // Acknowledged Put Pages are durable; there is no write-back state to push.
    this.#check(0, 0, false);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    await this.#track(this.blob.clearPages(offset, length, { leaseId: this.#leaseId }));
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    this.#check(offset, length, true);
    if (!opts.noHole) {
      await this.#track(this.blob.clearPages(offset, length, { leaseId: this.#leaseId }));
      return;
    }
    // NO_HOLE: the range must stay allocated, so write real zeros. Rare enough to go one Put Page at a time.
    const zeros = new Uint8Array(Math.min(length, MAX_PUT_PAGE));
    for (let pos = offset; pos < offset + length; pos += MAX_PUT_PAGE) {
      const n = Math.min(MAX_PUT_PAGE, offset + length - pos);
      await this.#track(this.blob.putPages(pos, zeros.subarray(0, n), { leaseId: this.#leaseId }));
    }
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.#check(offset, length, false);
    const span = Math.min(length, this.#statusLimit);
    const pages = await this.#track(this.blob.pageRanges(offset, span, { leaseId: this.#leaseId }));
    return toExtents(offset, span, pages);
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#check(offset, length, false);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#inflight]);
    if (this.#ownsBlob) await this.blob.close();
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const done = () => this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  #check(offset: number, length: number, writing: boolean): void {
    if (this.#closed) throw new BlockError("ESHUTDOWN", "device is closed");
    if (writing && this.readOnly) throw new BlockError("EPERM", "device is read-only");
    if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) {
      throw new BlockError("EINVAL", `unaligned request ${offset}+${length}`);
    }
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockError("ENOSPC", `request ${offset}+${length} beyond end ${this.size}`);
    }
  }
}

/**
 * Turn allocated ranges (in order, possibly overlapping the window's edges
 * and possibly adjacent) into extents covering exactly [offset, offset+span).
 */
export function toExtents(
  offset: number,
  span: number,
  pages: Array<{ offset: number; length: number }>,
): Extent[] {
  const end = offset + span;
  const extents: Extent[] = [];
  const push = (from: number, to: number, hole: boolean) => {
    if (to <= from) return;
    const last = extents[extents.length - 1];
    if (last && last.hole === hole && last.offset + last.length === from) last.length += to - from;
    else extents.push({ offset: from, length: to - from, hole, zero: hole });
  };
  let pos = offset;
  for (const r of pages) {
    const from = Math.max(r.offset, pos);
    const to = Math.min(r.offset + r.length, end);
    if (to <= from) continue;
    push(pos, from, true);
    push(from, to, false);
    pos = to;
  }
  push(pos, end, true);
  return extents;
}
