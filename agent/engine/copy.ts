/**
 * The copier: brings a replica up to date from the ONLINE ones while client
 * writes continue (resync and rebuild, issue 5 design).
 *
 * The work is a list of ranges (a dirty log's regions, or every allocated
 * range of the source for a full copy), cut into windows of at most
 * `chunkBytes`. Each window is copied under a range lock: the replica layer
 * lets no mutation into the window while it is held, and grants it only
 * once the mutations already inside the window have completed. Inside the
 * lock the source's allocation is asked afresh (blockStatus), its data
 * copied and, when `clearHoles`, its holes cleared on the target.
 *
 * Why a lock rather than redoing a window a write touched: the target is
 * also written by every client write while it catches up, so the one
 * danger is the copier writing source bytes it read before a client write
 * landed, after that write reached the target. With the lock, a client
 * write to the window either completed before the copy read it (the source
 * has it) or starts after the copy wrote it (it reaches the target later).
 * It costs a client write at most one window's read and write of latency,
 * only for writes into the window being copied; a redo scheme would need
 * per-window write counters and could starve a window under a steady
 * writer.
 *
 * Concurrency: up to `concurrency` windows at once, each locked on its own.
 * `signal` stops it between requests (the target went offline, the volume
 * closed); a failed request rejects the copy.
 */
import type { BlockDevice, Extent } from "../nbd/device.ts";

/** Default window: one Put Page. */
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;
/** Windows copied at once. */
export const DEFAULT_COPY_CONCURRENCY = 4;
/** A window of a hole to clear may be larger: clearing costs one request however large. */
const HOLE_WINDOW_CHUNKS = 64;

export interface CopyRange {
  offset: number;
  length: number;
}

/** Where the copy reads: the volume's preferred ONLINE replica, with failover. */
export interface CopySource {
  read(offset: number, length: number): Promise<Uint8Array>;
  blockStatus(offset: number, length: number): Promise<Extent[]>;
}

/** Lock [start, end) against mutations; resolves with the release once held. */
export type RangeLock = (start: number, end: number) => Promise<() => void>;

export interface CopyOptions {
  source: CopySource;
  target: BlockDevice;
  /** What to copy; counts towards the progress. */
  ranges: CopyRange[];
  /** Source holes to clear on the target as well (a full resync of an old blob). */
  holes?: CopyRange[];
  /** Clear the source's holes found inside `ranges` on the target (not needed on a new blob). */
  clearHoles: boolean;
  lock: RangeLock;
  chunkBytes?: number;
  concurrency?: number;
  signal?: AbortSignal;
  /** Ranges below this offset are on the target already (copy-checkpoint.ts): counted, not copied. */
  skipBelow?: number;
  /** Every byte of `ranges` below this offset is now copied (called as that offset advances). */
  onDoneBelow?: (offset: number) => void;
}

/** One copy run: progress counters, then `run()`. */
export class Copy {
  readonly totalBytes: number;
  /** Bytes of `ranges` done. */
  copiedBytes = 0;
  /** Bytes read from the source and written to the target. */
  dataBytes = 0;
  /** Bytes cleared on the target. */
  clearedBytes = 0;
  readonly #o: CopyOptions;
  readonly #chunk: number;
  /** `ranges` from `skipBelow` on: what this run copies. */
  readonly #todo: CopyRange[] = [];

  constructor(opts: CopyOptions) {
    this.#o = opts;
    this.#chunk = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.totalBytes = opts.ranges.reduce((n, r) => n + r.length, 0);
    const skip = opts.skipBelow ?? 0;
    for (const r of opts.ranges) {
      const end = r.offset + r.length;
      const from = Math.min(end, Math.max(r.offset, skip));
      // What is below `skip` was copied before this run.
      this.copiedBytes += from - r.offset;
      if (from < end) this.#todo.push({ offset: from, length: end - from });
    }
  }

  /** Percent done, 0..100. */
  get percent(): number {
    return this.totalBytes === 0 ? 100 : (100 * this.copiedBytes) / this.totalBytes;
  }

  /** Copy everything; rejects with the first failure or the signal's reason. */
  async run(): Promise<void> {
    const windows = this.#windows();
    // Counted windows in the order they were taken, to know how far all of them are done.
    const taken: Window[] = [];
    const worker = async (): Promise<void> => {
      for (let w = windows.next(); !w.done; w = windows.next()) {
        this.#o.signal?.throwIfAborted();
        const window = w.value;
        if (window.counted) taken.push(window);
        await this.#window(window);
        if (!window.counted) continue;
        this.copiedBytes += window.end - window.start;
        window.done = true;
        let below: number | undefined;
        while (taken[0]?.done) below = taken.shift()!.end;
        if (below !== undefined) this.#o.onDoneBelow?.(below);
      }
    };
    const n = Math.max(1, this.#o.concurrency ?? DEFAULT_COPY_CONCURRENCY);
    const results = await Promise.allSettled(Array.from({ length: n }, worker));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  *#windows(): Generator<Window> {
    for (const r of this.#todo) yield* cut(r, this.#chunk, true, this.#o.clearHoles);
    const holeWindow = this.#chunk * HOLE_WINDOW_CHUNKS;
    for (const r of this.#o.holes ?? []) yield* cut(r, holeWindow, false, true);
  }

  async #window(w: Window): Promise<void> {
    const { source, target, signal } = this.#o;
    const release = await this.#o.lock(w.start, w.end);
    try {
      let pos = w.start;
      while (pos < w.end) {
        const extents = await source.blockStatus(pos, w.end - pos);
        if (extents.length === 0) throw new Error(`blockStatus at ${pos} returned no extent`);
        for (const e of extents) {
          const end = Math.min(e.offset + e.length, w.end);
          if (e.hole) {
            if (w.clear) {
              signal?.throwIfAborted();
              await target.writeZeroes(e.offset, end - e.offset);
              this.clearedBytes += end - e.offset;
            }
          } else {
            for (let p = e.offset; p < end; p += this.#chunk) {
              const n = Math.min(this.#chunk, end - p);
              signal?.throwIfAborted();
              const data = await source.read(p, n);
              await target.write(p, data);
              this.dataBytes += n;
            }
          }
          pos = end;
        }
      }
    } finally {
      release();
    }
  }
}

interface Window {
  start: number;
  end: number;
  /** Counts towards the progress. */
  counted: boolean;
  clear: boolean;
  /** Copied (counted windows only). */
  done?: boolean;
}

function* cut(r: CopyRange, size: number, counted: boolean, clear: boolean): Generator<Window> {
  for (let start = r.offset; start < r.offset + r.length; start += size) {
    yield { start, end: Math.min(start + size, r.offset + r.length), counted, clear };
  }
}

/** The source's allocated ranges and holes over [0, size), merged, from blockStatus. */
export async function allocation(
  source: CopySource,
  size: number,
): Promise<{ allocated: CopyRange[]; holes: CopyRange[] }> {
  const allocated: CopyRange[] = [];
  const holes: CopyRange[] = [];
  let pos = 0;
  while (pos < size) {
    const extents = await source.blockStatus(pos, size - pos);
    if (extents.length === 0) throw new Error(`blockStatus at ${pos} returned no extent`);
    for (const e of extents) {
      const list = e.hole ? holes : allocated;
      const last = list[list.length - 1];
      if (last && last.offset + last.length === e.offset) last.length += e.length;
      else list.push({ offset: e.offset, length: e.length });
      pos = e.offset + e.length;
    }
  }
  return { allocated, holes };
}

/** Where two sorted, disjoint range lists overlap. */
export function intersect(a: CopyRange[], b: CopyRange[]): CopyRange[] {
  const out: CopyRange[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = a[i]!;
    const y = b[j]!;
    const start = Math.max(x.offset, y.offset);
    const end = Math.min(x.offset + x.length, y.offset + y.length);
    if (start < end) out.push({ offset: start, length: end - start });
    if (x.offset + x.length <= y.offset + y.length) i++;
    else j++;
  }
  return out;
}
