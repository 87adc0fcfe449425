/**
 * Alignment layer: accepts any byte offset and length from clients that ignore
 * the advertised minimum block size, and hands `next` whole 512-byte sectors
 * only (page blobs accept nothing else).
 *
 * - read: reads the covering sectors and returns a view of the bytes asked.
 * - write: reads the partial head and tail sectors, patches them with the new
 *   bytes and writes the whole covering range in one request.
 * - trim: shrinks to the whole sectors inside (trim is advisory).
 * - writeZeroes: zeroes the whole sectors inside, and the partial edges by
 *   read-modify-write.
 * - blockStatus: asks for the covering sectors and clips the answer.
 *
 * Aligned requests pass straight through with no extra work.
 *
 * Concurrency: a read-modify-write locks the partial sectors it patches (at
 * most two, taken in ascending order so two requests cannot deadlock) from
 * its read until its write completes. Two unaligned writes sharing a sector
 * therefore run one after the other and neither loses the other's bytes.
 * Whole sectors are not locked: a request that writes a whole sector
 * overlaps any other request touching it, and NBD leaves the outcome of
 * concurrent overlapping requests to the client.
 */
import {
  type BlockDevice,
  BlockError,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from "../nbd/device.ts";
import { Layer } from "./layer.ts";

interface SectorLock {
  sector: number;
  waiters: Array<() => void>;
}

/** The page blob page size. */
export const SECTOR = 512;

export interface AlignOptions {
  /** Granularity `next` requires; a power of two. */
  sector: number;
}

export const DEFAULT_ALIGN_OPTIONS: AlignOptions = { sector: SECTOR };

/** Wrap `next` so requests of any alignment are accepted. */
export function align(next: BlockDevice, opts: Partial<AlignOptions> = {}): AlignLayer {
  return new AlignLayer(next, { ...DEFAULT_ALIGN_OPTIONS, ...opts });
}

export class AlignLayer extends Layer implements BlockDevice {
  readonly #next: BlockDevice;
  readonly #sector: number;
  /**
   * Locked sectors and their waiters, in arrival order. A short array
   * scanned rather than a Map: a long-lived Map churned by every request
   * fills V8's old generation with dead hash tables.
   */
  readonly #locks: SectorLock[] = [];
  #rmw = 0;

  constructor(next: BlockDevice, opts: AlignOptions) {
    super(next);
    if (opts.sector <= 0 || (opts.sector & (opts.sector - 1)) !== 0) {
      throw new RangeError(`sector size must be a power of two, got ${opts.sector}`);
    }
    this.#next = next;
    this.#sector = opts.sector;
  }

  /** Read-modify-write cycles done so far (for metrics). */
  get readModifyWrites(): number {
    return this.#rmw;
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const s = this.#sector;
    if (offset % s === 0 && length % s === 0) return this.#next.read(offset, length, into);
    // `into` is too small for the covering sectors; a view of ours will do.
    return this.#readCovering(offset, length);
  }

  async #readCovering(offset: number, length: number): Promise<Uint8Array> {
    const from = this.#down(offset);
    const to = this.#up(offset + length);
    const buf = await this.#next.read(from, to - from);
    return buf.subarray(offset - from, offset - from + length);
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    const s = this.#sector;
    if (offset % s === 0 && data.length % s === 0) return this.#next.write(offset, data, opts);
    return this.#patch(offset, data.length, opts, (buf, at) => buf.set(data, at));
  }

  flush(): Promise<void> {
    return this.#next.flush();
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    const from = this.#up(offset);
    const to = this.#down(offset + length);
    if (from === offset && to === offset + length) return this.#next.trim(offset, length, opts);
    // Trim is advisory: the partial sectors at the edges are simply kept.
    if (to <= from) {
      if (this.readOnly) return Promise.reject(new BlockError("EPERM", "device is read-only"));
      return Promise.resolve();
    }
    return this.#next.trim(from, to - from, opts);
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    const s = this.#sector;
    if (offset % s === 0 && length % s === 0) return this.#next.writeZeroes(offset, length, opts);
    const end = offset + length;
    const innerFrom = this.#up(offset);
    const innerTo = this.#down(end);
    const work: Promise<void>[] = [];
    if (innerTo <= innerFrom) {
      // Inside one sector, or two neighbours with no whole sector between.
      work.push(this.#patch(offset, length, opts, zeroFill));
    } else {
      if (offset < innerFrom) work.push(this.#patch(offset, innerFrom - offset, opts, zeroFill));
      work.push(this.#next.writeZeroes(innerFrom, innerTo - innerFrom, opts));
      if (innerTo < end) work.push(this.#patch(innerTo, end - innerTo, opts, zeroFill));
    }
    return settleAll(work);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const s = this.#sector;
    if (offset % s === 0 && length % s === 0) return this.#next.blockStatus(offset, length);
    const from = this.#down(offset);
    const to = this.#up(offset + length);
    const end = offset + length;
    const out: Extent[] = [];
    for (const e of await this.#next.blockStatus(from, to - from)) {
      const a = Math.max(e.offset, offset);
      const b = Math.min(e.offset + e.length, end);
      if (b > a) out.push({ offset: a, length: b - a, hole: e.hole, zero: e.zero });
    }
    return out;
  }

  cache(offset: number, length: number): Promise<void> {
    const from = this.#down(offset);
    return this.#next.cache(from, this.#up(offset + length) - from);
  }

  close(): Promise<void> {
    return this.#next.close();
  }

  /**
   * Read-modify-write of [offset, offset+length): lock the partial edge
   * sectors, read the covering sectors when an edge is partial, let `fill`
   * put the new bytes in at `at`, write the covering range back.
   */
  async #patch(
    offset: number,
    length: number,
    opts: WriteOptions | undefined,
    fill: (buf: Uint8Array, at: number, length: number) => void,
  ): Promise<void> {
    const s = this.#sector;
    const from = this.#down(offset);
    const to = this.#up(offset + length);
    const head = offset % s !== 0 ? from / s : -1;
    const tail = (offset + length) % s !== 0 ? to / s - 1 : -1;
    this.#rmw++;
    if (head >= 0) await this.#lock(head);
    if (tail >= 0 && tail !== head) await this.#lock(tail);
    try {
      const buf = new Uint8Array(to - from);
      // Only the partial edge sectors carry old bytes that must survive.
      if (head >= 0 && tail >= 0 && to - from <= 2 * s) {
        buf.set(await this.#next.read(from, to - from));
      } else {
        const reads: Promise<void>[] = [];
        if (head >= 0) reads.push(this.#readSector(buf, from, from));
        if (tail >= 0 && tail !== head) reads.push(this.#readSector(buf, from, tail * s));
        await settleAll(reads);
      }
      fill(buf, offset - from, length);
      await this.#next.write(from, buf, opts);
    } finally {
      if (tail >= 0 && tail !== head) this.#unlock(tail);
      if (head >= 0) this.#unlock(head);
    }
  }

  async #readSector(buf: Uint8Array, base: number, at: number): Promise<void> {
    buf.set(await this.#next.read(at, this.#sector), at - base);
  }

  #lock(sector: number): Promise<void> | undefined {
    const held = this.#locks.find((l) => l.sector === sector);
    if (held === undefined) {
      this.#locks.push({ sector, waiters: [] });
      return undefined;
    }
    return new Promise((resolve) => held.waiters.push(resolve));
  }

  #unlock(sector: number): void {
    const i = this.#locks.findIndex((l) => l.sector === sector);
    const lock = this.#locks[i]!;
    const next = lock.waiters.shift();
    // Hand the lock straight to the next waiter; drop the entry when idle.
    if (next) next();
    else this.#locks.splice(i, 1);
  }

  #down(n: number): number {
    return n - (n % this.#sector);
  }

  #up(n: number): number {
    const r = n % this.#sector;
    return r === 0 ? n : n + this.#sector - r;
  }
}

function zeroFill(buf: Uint8Array, at: number, length: number): void {
  buf.fill(0, at, at + length);
}

/**
 * Wait for every promise, then reject with the first error if any. Unlike
 * Promise.all this never leaves work running behind a rejection, which
 * would release sector locks while a write is still in flight.
 */
async function settleAll(work: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(work);
  for (const r of results) if (r.status === "rejected") throw r.reason;
}
