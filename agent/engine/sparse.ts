/**
 * Sparse map layer: knows which pages of the blob hold data, so BLOCK_STATUS
 * needs no Get Page Ranges and reads of holes need no request at all.
 *
 * The map is loaded once from `next.blockStatus`, in sub-ranges of
 * `loadChunkBytes` (a few Get Page Ranges calls in parallel rather than one
 * call over a fragmented 8 TiB blob, which the service may time out), and then
 * kept exact by the mutations passing through:
 *
 * - a write marks its range allocated when it starts, so a read racing it
 *   goes to the backend rather than answering zeros;
 * - a trim or writeZeroes marks its range a hole when it completes, except
 *   the bytes of writes that started meanwhile (the layer below orders
 *   overlapping mutations, so those writes land after the clear);
 * - a write of all-zero data entirely inside a hole is dropped: the bytes
 *   already read as zeros (optionally, see `skipZeroWrites`).
 *
 * Errs only towards "allocated": an allocated range read from the backend is
 * always right, a hole that holds data would not be. Until `load()` has
 * finished, reads and blockStatus go to the backend and no hole is recorded.
 *
 * NO_HOLE: a cleared page blob page reads as zeros but is no longer
 * allocated, and the only way to keep it allocated is to upload zeros. Page
 * blob capacity is fixed at the blob size, so a hole can never later fail to
 * allocate (the reason NO_HOLE exists); writeZeroes therefore always clears,
 * NO_HOLE included, and the map reports the hole. FAST_ZERO is accepted:
 * a clear is one request however large.
 *
 * Requests are expected 512-aligned (the align layer sits above).
 *
 * Concurrency: map edits are synchronous; requests are not serialised here.
 */
import {
  type BlockDevice,
  BlockError,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from "../nbd/device.ts";
import { IntervalSet } from "./interval-set.ts";
import { Layer } from "./layer.ts";

/** Get Page Ranges span per call while loading the map. */
export const DEFAULT_LOAD_CHUNK_BYTES = 1024 * 1024 * 1024;
/** Get Page Ranges calls in flight while loading the map. */
export const DEFAULT_LOAD_CONCURRENCY = 4;
/** Most extents in one blockStatus answer; the client asks again from there. */
export const MAX_EXTENTS = 16384;

export interface SparseOptions {
  loadChunkBytes: number;
  loadConcurrency: number;
  /** Drop writes of all-zero data that land entirely inside a hole. */
  skipZeroWrites: boolean;
}

export const DEFAULT_SPARSE_OPTIONS: SparseOptions = {
  loadChunkBytes: DEFAULT_LOAD_CHUNK_BYTES,
  loadConcurrency: DEFAULT_LOAD_CONCURRENCY,
  skipZeroWrites: true,
};

/** What the map has saved (for metrics). */
export interface SparseStats {
  /** Reads answered from the map without a backend request. */
  holeReads: number;
  /** Reads narrowed to the allocated part of their range. */
  trimmedReads: number;
  /** All-zero writes into holes that were dropped. */
  skippedZeroWrites: number;
  /** blockStatus answered from the map. */
  mapAnswers: number;
  /** Bytes the map holds as allocated. */
  allocatedBytes: number;
  /** Disjoint allocated ranges in the map. */
  ranges: number;
  /** blockStatus calls made to load the map. */
  loadCalls: number;
}

/** A trim or writeZeroes in flight, and the writes to its range that started meanwhile. */
interface Clearing {
  start: number;
  end: number;
  overwritten: Array<[number, number]> | null;
}

/** Wrap `next` with a sparse map. Call `load()` before serving for the map to take effect. */
export function sparse(next: BlockDevice, opts: Partial<SparseOptions> = {}): SparseMap {
  return new SparseMap(next, { ...DEFAULT_SPARSE_OPTIONS, ...opts });
}

export class SparseMap extends Layer implements BlockDevice {
  readonly #next: BlockDevice;
  readonly #opts: SparseOptions;
  readonly #map = new IntervalSet();
  #clearing: Clearing[] = [];
  #loaded = false;
  #loading: Promise<void> | undefined;
  #closed = false;
  #holeReads = 0;
  #trimmedReads = 0;
  #skippedZeroWrites = 0;
  #mapAnswers = 0;
  #loadCalls = 0;

  constructor(next: BlockDevice, opts: SparseOptions) {
    super(next);
    this.#next = next;
    this.#opts = opts;
  }

  /** True once the map reflects the whole device. */
  get loaded(): boolean {
    return this.#loaded;
  }

  get stats(): SparseStats {
    return {
      holeReads: this.#holeReads,
      trimmedReads: this.#trimmedReads,
      skippedZeroWrites: this.#skippedZeroWrites,
      mapAnswers: this.#mapAnswers,
      allocatedBytes: this.#map.covered,
      ranges: this.#map.count,
      loadCalls: this.#loadCalls,
    };
  }

  /** Allocated ranges, in order (for tests and debugging). */
  ranges(): Array<[number, number]> {
    return this.#map.toArray();
  }

  /** Fetch the allocation map from `next`. Idempotent. */
  load(): Promise<void> {
    this.#loading ??= this.#load();
    return this.#loading;
  }

  async #load(): Promise<void> {
    const chunk = Math.max(this.blockSizes.minimum, this.#opts.loadChunkBytes);
    let nextChunk = 0;
    const worker = async (): Promise<void> => {
      while (nextChunk < this.size) {
        const from = nextChunk;
        const to = Math.min(this.size, from + chunk);
        nextChunk = to;
        await this.#loadRange(from, to);
      }
    };
    const workers: Promise<void>[] = [];
    for (let i = 0; i < Math.max(1, this.#opts.loadConcurrency); i++) workers.push(worker());
    await Promise.all(workers);
    this.#loaded = true;
  }

  async #loadRange(from: number, to: number): Promise<void> {
    let pos = from;
    while (pos < to) {
      this.#loadCalls++;
      const extents = await this.#next.blockStatus(pos, to - pos);
      let end = pos;
      for (const e of extents) {
        // Only adds: a write that started during the load already marked
        // its range, and a stale hole from the backend must not undo that.
        if (!e.hole) this.#map.add(e.offset, e.offset + e.length);
        end = e.offset + e.length;
      }
      if (end <= pos) throw new BlockError("EIO", `blockStatus made no progress at ${pos}`);
      pos = end;
    }
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (!this.#loaded) return this.#next.read(offset, length, into);
    const end = offset + length;
    const hull = this.#map.hull(offset, end);
    if (hull === undefined) {
      const bad = this.#check(offset, length);
      if (bad) return bad;
      this.#holeReads++;
      return Promise.resolve(into ? into.fill(0) : Buffer.alloc(length));
    }
    if (hull[0] === offset && hull[1] === end) return this.#next.read(offset, length, into);
    // Holes at either edge: fetch only the allocated middle.
    this.#trimmedReads++;
    return this.#readPart(offset, length, hull[0], hull[1], into);
  }

  async #readPart(
    offset: number,
    length: number,
    from: number,
    to: number,
    into: Uint8Array | undefined,
  ): Promise<Uint8Array> {
    const out = into ?? Buffer.allocUnsafe(length);
    const at = from - offset;
    const view = out.subarray(at, at + to - from);
    const part = await this.#next.read(from, to - from, view);
    if (part.buffer !== view.buffer || part.byteOffset !== view.byteOffset) view.set(part);
    out.fill(0, 0, at);
    out.fill(0, at + to - from);
    return out;
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    const end = offset + data.length;
    const bad = this.#check(offset, data.length, true);
    if (bad) return bad;
    if (!this.#loaded) this.#map.add(offset, end);
    else if (!this.#map.covers(offset, end)) {
      if (this.#opts.skipZeroWrites && !this.#map.overlaps(offset, end) && isAllZero(data)) {
        this.#skippedZeroWrites++;
        return Promise.resolve();
      }
      this.#map.add(offset, end);
    }
    if (this.#clearing.length > 0) this.#overwrite(offset, end);
    return this.#next.write(offset, data, opts);
  }

  flush(): Promise<void> {
    return this.#next.flush();
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#check(offset, length, true) ?? this.#clear(offset, length, false, opts);
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#check(offset, length, true) ?? this.#clear(offset, length, true, opts);
  }

  async #clear(offset: number, length: number, zero: boolean, opts?: ZeroOptions): Promise<void> {
    const entry: Clearing = { start: offset, end: offset + length, overwritten: null };
    this.#clearing.push(entry);
    try {
      if (zero) await this.#next.writeZeroes(offset, length, opts);
      else await this.#next.trim(offset, length, opts);
    } finally {
      const i = this.#clearing.indexOf(entry);
      if (i >= 0) this.#clearing.splice(i, 1);
    }
    // A trim that started before the load finished may have been read back
    // by the load as allocated; recording the hole is then right. One that
    // completed before is left as the load saw it (allocated at worst).
    if (!this.#loaded) return;
    this.#map.remove(entry.start, entry.end);
    // Writes that started during the clear reach the backend after it
    // (coalesce orders overlapping mutations): their bytes are data.
    for (const [s, e] of entry.overwritten ?? []) {
      this.#map.add(Math.max(s, entry.start), Math.min(e, entry.end));
    }
  }

  #overwrite(start: number, end: number): void {
    for (const c of this.#clearing) {
      if (c.start >= end || start >= c.end) continue;
      if (c.overwritten === null) c.overwritten = [[start, end]];
      else c.overwritten.push([start, end]);
    }
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    if (!this.#loaded) return this.#next.blockStatus(offset, length);
    const bad = this.#check(offset, length);
    if (bad) return bad;
    this.#mapAnswers++;
    const end = offset + length;
    const extents: Extent[] = [];
    let pos = offset;
    this.#map.forEach(offset, end, (s, e) => {
      if (s > pos) extents.push({ offset: pos, length: s - pos, hole: true, zero: true });
      if (extents.length >= MAX_EXTENTS) return false;
      extents.push({ offset: s, length: e - s, hole: false, zero: false });
      pos = e;
      return extents.length < MAX_EXTENTS;
    });
    const last = extents[extents.length - 1];
    const covered = last ? last.offset + last.length : offset;
    if (covered < end && extents.length < MAX_EXTENTS) {
      extents.push({ offset: covered, length: end - covered, hole: true, zero: true });
    }
    if (extents.length === 0) extents.push({ offset, length, hole: true, zero: true });
    return Promise.resolve(extents);
  }

  cache(offset: number, length: number): Promise<void> {
    if (this.#loaded && !this.#map.overlaps(offset, offset + length)) {
      return this.#check(offset, length) ?? Promise.resolve();
    }
    return this.#next.cache(offset, length);
  }

  close(): Promise<void> {
    this.#closed = true;
    return this.#next.close();
  }

  /** What a backend would reject, for requests answered here without one. */
  #check(offset: number, length: number, writing = false): Promise<never> | undefined {
    if (this.#closed) return Promise.reject(new BlockError("ESHUTDOWN", "device is closed"));
    if (writing && this.readOnly)
      return Promise.reject(new BlockError("EPERM", "device is read-only"));
    if (offset < 0 || length < 0 || offset + length > this.size) {
      return Promise.reject(
        new BlockError("ENOSPC", `request ${offset}+${length} beyond end ${this.size}`),
      );
    }
    return undefined;
  }
}

const ZEROS = Buffer.alloc(64 * 1024);

/** True when every byte is zero; compares in 64 KiB slices with memcmp. */
export function isAllZero(data: Uint8Array): boolean {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (let pos = 0; pos < buf.length; pos += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - pos);
    if (buf.compare(ZEROS, 0, n, pos, pos + n) !== 0) return false;
  }
  return true;
}
