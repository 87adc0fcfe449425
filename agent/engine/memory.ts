/**
 * Memory backend: a sparse RAM device with page blob rules (512-byte pages,
 * at most 4 MiB per write), for benchmarks, protocol tests and `serve memory:`.
 * Like nbdkit's memory plugin, it is a product feature, not a test double.
 *
 * Large reads that fall within one chunk are answered with a view of the
 * chunk instead of a copy: the NBD layer writes it to the socket as is, so a
 * 1 MiB read costs no memcpy here. Such a chunk is "lent": it is never
 * modified in place again (copy-on-write), so a reply still queued on a
 * socket keeps the bytes it was read with. Small reads are copied, since
 * lending them would make the next small write to the chunk copy all of it.
 *
 * A write of exactly one whole chunk whose payload is donated (see
 * `PayloadDonation`) adopts the payload as the chunk instead of copying it,
 * and gives the chunk it replaces back to the donor for the next payload;
 * a 1 MiB write then costs no memcpy here either. An adopted chunk is
 * "pinned" while its donation is open (layers above may still read it), and
 * a pinned chunk is copied before any change, like a lent one. A replaced
 * chunk that is lent or pinned is left to the GC rather than given back.
 *
 * Concurrency: every call completes synchronously inside its promise, so
 * requests are atomic with respect to each other.
 */
import {
  BlockError,
  type BlockDevice,
  type Extent,
  type PayloadDonation,
  type WriteOptions,
} from "../nbd/device.ts";

export const PAGE = 512;
export const MAX_PUT = 4 * 1024 * 1024;
/** Default allocation unit: a 1 MiB request within one chunk is served without a copy. */
const DEFAULT_CHUNK = 1024 * 1024;
/** Reads at least this long are lent (a view), shorter ones copied. */
const LEND_MIN = 64 * 1024;

export interface MemoryOptions {
  size: number;
  readOnly?: boolean;
  /** Allocation (and hole) granularity: a power of two, at least 4 KiB; default 1 MiB. */
  chunkSize?: number;
}

export class MemoryBackend implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSizes = { minimum: PAGE, preferred: 4096, maximum: MAX_PUT };
  readonly canMultiConn = true;
  readonly #chunk: number;
  #chunks = new Map<number, Buffer>();
  /** Chunks handed out as read views: copied before any change. */
  #lent = new Set<number>();
  /**
   * Adopted chunks whose donation may still be open: copied before any
   * change while it is. Scanned rather than a Map: at most one entry per
   * write in flight, pruned on every adoption.
   */
  #pins: Pin[] = [];
  #closed = false;

  constructor(opts: MemoryOptions) {
    if (!Number.isSafeInteger(opts.size) || opts.size < 0 || opts.size % PAGE !== 0) {
      throw new RangeError(`memory size must be a multiple of ${PAGE} bytes, got ${opts.size}`);
    }
    const chunk = opts.chunkSize ?? DEFAULT_CHUNK;
    if (!Number.isSafeInteger(chunk) || chunk < 4096 || (chunk & (chunk - 1)) !== 0) {
      throw new RangeError(`memory chunk size must be a power of two of at least 4096, got ${chunk}`);
    }
    this.#chunk = chunk;
    this.size = opts.size;
    this.readOnly = opts.readOnly ?? false;
  }

  /** Bytes of RAM holding data (allocated chunks). */
  get allocatedBytes(): number {
    return this.#chunks.size * this.#chunk;
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.#check(offset, length, false);
    const idx = Math.floor(offset / this.#chunk);
    const lendable = length >= LEND_MIN && (offset + length - 1) < (idx + 1) * this.#chunk;
    const whole = lendable ? this.#chunks.get(idx) : undefined;
    if (whole) {
      this.#lent.add(idx);
      const at = offset - idx * this.#chunk;
      return whole.subarray(at, at + length);
    }
    const out =
      into && into.byteLength === length
        ? Buffer.from(into.buffer, into.byteOffset, length)
        : Buffer.allocUnsafe(length);
    this.#each(offset, length, (idx, at, from, n) => {
      const chunk = this.#chunks.get(idx);
      if (chunk) chunk.copy(out, from, at, at + n);
      else out.fill(0, from, from + n);
    });
    return out;
  }

  async write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    this.#check(offset, data.length, true);
    if (data.length > MAX_PUT) throw new BlockError("EINVAL", "write larger than 4 MiB");
    const donation = opts?.donation;
    if (
      donation !== undefined &&
      data.length === this.#chunk &&
      offset % this.#chunk === 0 &&
      this.#adopt(offset / this.#chunk, data, donation)
    ) {
      return;
    }
    const src = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.#each(offset, data.length, (idx, at, from, n) => {
      const chunk = this.#writable(idx, n === this.#chunk) ?? this.#allocate(idx);
      src.copy(chunk, at, from, from + n);
    });
  }

  async flush(): Promise<void> {
    this.#check(0, 0, false);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    this.#each(offset, length, (idx, at, _from, n) => {
      if (n === this.#chunk) return this.#free(idx);
      const chunk = this.#writable(idx, false);
      if (!chunk) return;
      chunk.fill(0, at, at + n);
      if (isZero(chunk)) this.#free(idx);
    });
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.#check(offset, length, false);
    const extents: Extent[] = [];
    this.#each(offset, length, (idx, _at, from, n) => {
      const hole = !this.#chunks.has(idx);
      const last = extents[extents.length - 1];
      if (last && last.hole === hole) last.length += n;
      else extents.push({ offset: offset + from, length: n, hole, zero: hole });
    });
    return extents;
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#check(offset, length, false);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#chunks.clear();
    this.#lent.clear();
    this.#pins = [];
  }

  #check(offset: number, length: number, writing: boolean): void {
    if (this.#closed) throw new BlockError("ESHUTDOWN", "device is closed");
    if (writing && this.readOnly) throw new BlockError("EPERM", "device is read-only");
    if (offset % PAGE !== 0 || length % PAGE !== 0) {
      throw new BlockError("EINVAL", `unaligned request ${offset}+${length}`);
    }
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockError("ENOSPC", `request ${offset}+${length} beyond end ${this.size}`);
    }
  }

  /**
   * The chunk to modify in place, or undefined when none is allocated. A
   * lent or pinned chunk is replaced by a copy first (by fresh memory when the caller
   * overwrites all of it), so views already handed out keep their bytes.
   */
  #writable(idx: number, overwritten: boolean): Buffer | undefined {
    const chunk = this.#chunks.get(idx);
    if (!chunk || !(this.#lent.delete(idx) || this.#pinned(chunk))) return chunk;
    const fresh = overwritten ? Buffer.allocUnsafe(this.#chunk) : Buffer.from(chunk);
    this.#chunks.set(idx, fresh);
    return fresh;
  }

  /**
   * Make the donated `data` chunk `idx`, returning the chunk it replaces to
   * the donor unless someone may still see it. False when the donor keeps
   * its buffer (the caller copies then).
   */
  #adopt(idx: number, data: Uint8Array, donation: PayloadDonation): boolean {
    const chunk = donation.take(data);
    if (chunk === undefined) return false;
    const old = this.#chunks.get(idx);
    this.#chunks.set(idx, chunk);
    const lent = this.#lent.delete(idx);
    // Prunes closed pins too, so the list stays as short as the writes in flight.
    const pinned = this.#pinned(old);
    if (old !== undefined && !lent && !pinned) donation.recycle(old);
    if (donation.open) this.#pins.push({ chunk, donation });
    return true;
  }

  /** Whether `chunk` was adopted from a donation still open; drops closed pins. */
  #pinned(chunk: Buffer | undefined): boolean {
    const pins = this.#pins;
    let found = false;
    // Backwards, so the entry swapped into a removed slot was already seen.
    for (let i = pins.length - 1; i >= 0; i--) {
      const pin = pins[i]!;
      if (!pin.donation.open) {
        pins[i] = pins[pins.length - 1]!;
        pins.pop();
      } else if (pin.chunk === chunk) {
        found = true;
      }
    }
    return found;
  }

  #allocate(idx: number): Buffer {
    const chunk = Buffer.alloc(this.#chunk);
    this.#chunks.set(idx, chunk);
    return chunk;
  }

  #free(idx: number): void {
    this.#chunks.delete(idx);
    this.#lent.delete(idx);
  }

  /** Walk [offset, offset+length) chunk by chunk: (chunk index, offset in chunk, offset in request, bytes). */
  #each(offset: number, length: number, fn: (idx: number, at: number, from: number, n: number) => void) {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / this.#chunk);
      const at = pos - idx * this.#chunk;
      const n = Math.min(this.#chunk - at, end - pos);
      fn(idx, at, pos - offset, n);
      pos += n;
    }
  }
}

interface Pin {
  chunk: Buffer;
  donation: PayloadDonation;
}

function isZero(buf: Buffer): boolean {
  // Word-wise compare against a shared zero page, without allocating per call.
  for (let at = 0; at < buf.length; at += ZERO_PAGE.length) {
    if (ZERO_PAGE.compare(buf, at, at + ZERO_PAGE.length) !== 0) return false;
  }
  return true;
}
const ZERO_PAGE = Buffer.alloc(4096);
