/**
 * Split and coalesce: the write scheduler in front of the backend.
 *
 * - Requests up to `maxRequestBytes` (32 MiB, what the NBD edge allows) are
 *   accepted; writes larger than `maxWriteBytes` (4 MiB, the Put Page limit)
 *   are split, reads larger than `maxReadBytes` are fetched in parallel parts.
 * - Mutations (write, trim, writeZeroes) share one queue with at most
 *   `maxInFlight` of them at the backend; the rest wait.
 * - On dispatch, ready writes that are contiguous are merged into one backend
 *   write of up to `maxWriteBytes`, which resolves every request in it. Writes
 *   arriving in the same tick are dispatched together (the pump runs in a
 *   microtask), so they merge too.
 * - A small write that continues a backend write still in flight is held
 *   until that write completes, or until `holdMaxBytes` have gathered behind
 *   it (`holdContiguous`, Nagle-like): a sequential stream then keeps a few
 *   writes at the backend and gathers the next batch meanwhile, so 32
 *   queued 4 KiB writes become two or three Put Pages instead of 32. It
 *   costs at most one backend round trip of latency and only ever applies
 *   to writes that directly follow one in flight.
 * - A FUA write resolves only when its backend write resolved, like every
 *   write here: with write-through the backend's acknowledgement is
 *   durability. A merged write carries FUA if any member does.
 *
 * Concurrency rule: mutations that overlap reach the backend in arrival order
 * and never concurrently (a later write to the same bytes wins): each waits
 * until every earlier overlapping mutation has completed. Non-overlapping
 * mutations may be reordered and merged. Reads, blockStatus and cache pass
 * straight through: NBD defines no order between concurrent reads and
 * writes, and a client that waited for a write's reply finds it done here.
 * flush() waits for every mutation accepted before it, then flushes `next`.
 */
import {
  type BlockDevice,
  BlockError,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from "../nbd/device.ts";
import { Layer } from "./layer.ts";

/** Backend mutations in flight at once. */
export const DEFAULT_MAX_IN_FLIGHT = 32;
/** Largest request accepted (NBD_INFO_BLOCK_SIZE maximum). */
export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** Largest backend write: the Put Page limit. */
export const DEFAULT_MAX_WRITE_BYTES = 4 * 1024 * 1024;
/** Reads larger than this are fetched as parallel parts. */
export const DEFAULT_MAX_READ_BYTES = 4 * 1024 * 1024;
/**
 * Writes up to this size are merge candidates. Larger ones already amortise
 * the per-request cost, and merging them would only add a copy.
 */
export const DEFAULT_MERGE_MAX_BYTES = 512 * 1024;

/**
 * A write held behind a contiguous one in flight goes anyway once its run
 * has gathered this much: a sequential stream then keeps a few Put Pages of
 * this size in flight instead of one large one, which overlaps their latency.
 */
export const DEFAULT_HOLD_MAX_BYTES = 64 * 1024;

export interface CoalesceOptions {
  maxInFlight: number;
  maxRequestBytes: number;
  /** Defaults to the backend's `blockSizes.maximum`, at most 4 MiB. */
  maxWriteBytes: number;
  maxReadBytes: number;
  mergeMaxBytes: number;
  holdContiguous: boolean;
  /** A held run is let go once it has gathered this much. */
  holdMaxBytes: number;
  directDispatch: boolean;
}

export const DEFAULT_COALESCE_OPTIONS: Omit<CoalesceOptions, "maxWriteBytes"> = {
  maxInFlight: DEFAULT_MAX_IN_FLIGHT,
  maxRequestBytes: DEFAULT_MAX_REQUEST_BYTES,
  maxReadBytes: DEFAULT_MAX_READ_BYTES,
  mergeMaxBytes: DEFAULT_MERGE_MAX_BYTES,
  holdContiguous: true,
  holdMaxBytes: DEFAULT_HOLD_MAX_BYTES,
  directDispatch: true,
};

/** What the scheduler did (for metrics and the merge-ratio test). */
export interface CoalesceStats {
  /** Write pieces queued (a write larger than maxWriteBytes counts per piece). */
  writes: number;
  /** Backend writes issued. */
  writeBatches: number;
  /** Writes that went out merged with others. */
  mergedWrites: number;
  /** Times a write was held behind a contiguous write in flight. */
  holds: number;
  /** Mutations queued or in flight right now. */
  pending: number;
  /** Most mutations queued or in flight at once. */
  maxPending: number;
}

const WRITE = 0;
const TRIM = 1;
const ZERO = 2;
type Kind = typeof WRITE | typeof TRIM | typeof ZERO;

/** Waiting for earlier overlapping mutations. */
const WAITING = 0;
const READY = 1;
/** Ready, but held behind the contiguous backend write in flight. */
const HELD = 2;
const IN_FLIGHT = 3;
const DONE = 4;

/**
 * The pieces of a split write. It settles only when every piece has
 * completed, even after one failed: the caller's buffer is lent until then
 * (the other pieces may still be sending it).
 */
interface Group {
  remaining: number;
  error: unknown;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function noop(): void {}

interface Op {
  kind: Kind;
  start: number;
  end: number;
  data: Uint8Array | null;
  opts: ZeroOptions | undefined;
  seq: number;
  state: number;
  /** Earlier overlapping mutations not yet completed. */
  deps: number;
  dependents: Op[] | null;
  mergeable: boolean;
  /** Position in #live. */
  live: number;
  /** Position in #pool while ready or held (mergeable writes only). */
  pool: number;
  /** Settles the client request (the group's for a piece of a split write). */
  resolve: () => void;
  reject: (err: unknown) => void;
  group: Group | null;
  /** First op of a backend call in flight: where the call ends... */
  head: boolean;
  callEnd: number;
  /** ...and the write held until it completes. */
  held: Op | null;
}

interface FlushWaiter {
  seq: number;
  resolve: () => void;
}

/** Ready or held writes by start and by end, to find runs; built per pump. */
interface RunIndex {
  byStart: Map<number, Op>;
  byEnd: Map<number, Op>;
}

const FUA: WriteOptions = Object.freeze({ fua: true });

/** Wrap `next` with splitting, bounded concurrency and write merging. */
export function coalesce(next: BlockDevice, opts: Partial<CoalesceOptions> = {}): CoalesceLayer {
  return new CoalesceLayer(next, {
    ...DEFAULT_COALESCE_OPTIONS,
    maxWriteBytes: Math.min(next.blockSizes.maximum, DEFAULT_MAX_WRITE_BYTES),
    ...opts,
  });
}

/*
 * No long-lived Map or Set on the hot path, on purpose: V8 allocates a
 * rehashed table in the generation of the table it replaces, so a Map that
 * lives long and churns (an entry per request) fills the old generation with
 * dead tables and turns cheap scavenges into full collections. The few ops
 * in flight are scanned instead, and the run index is a fresh Map per pump.
 */
export class CoalesceLayer extends Layer implements BlockDevice {
  readonly #next: BlockDevice;
  readonly #opts: CoalesceOptions;
  /** Every mutation not yet completed (unordered; each knows its index). */
  #live: Op[] = [];
  /** Ops in the order they became ready; entries before #head are consumed. */
  #ready: Op[] = [];
  #head = 0;
  /** Ops to look at before #ready: released holds, the rest of a cut run. */
  #again: Op[] = [];
  /** Ready or held mergeable writes (unordered; each knows its index). */
  #pool: Op[] = [];
  /** Ops in state HELD. */
  #held = 0;
  #flushWaiters: FlushWaiter[] = [];
  #drainWaiters: Array<() => void> = [];
  #inFlight = 0;
  #seq = 0;
  /** End of the last write accepted: a write starting there continues a stream. */
  #lastEnd = -1;
  #scheduled = false;
  #closed = false;
  #stats = { writes: 0, writeBatches: 0, mergedWrites: 0, holds: 0, maxPending: 0 };

  constructor(next: BlockDevice, opts: CoalesceOptions) {
    if (opts.maxInFlight < 1) throw new RangeError("maxInFlight must be at least 1");
    if (opts.maxWriteBytes < next.blockSizes.minimum) {
      throw new RangeError("maxWriteBytes is below the backend's minimum block size");
    }
    super(next, {
      minimum: next.blockSizes.minimum,
      preferred: next.blockSizes.preferred,
      maximum: Math.max(opts.maxRequestBytes, next.blockSizes.minimum),
    });
    this.#next = next;
    this.#opts = opts;
  }

  get stats(): CoalesceStats {
    return { ...this.#stats, pending: this.#live.length };
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) return shutdown();
    const max = this.#opts.maxReadBytes;
    if (length <= max) return this.#next.read(offset, length, into);
    return this.#readParts(offset, length, max, into ?? Buffer.allocUnsafe(length));
  }

  /** Read in parallel parts straight into views of `out`. */
  async #readParts(
    offset: number,
    length: number,
    max: number,
    out: Uint8Array,
  ): Promise<Uint8Array> {
    const parts: Promise<void>[] = [];
    for (let pos = 0; pos < length; pos += max) {
      const view = out.subarray(pos, Math.min(length, pos + max));
      parts.push(
        this.#next.read(offset + pos, view.length, view).then((got) => {
          if (got.buffer !== view.buffer || got.byteOffset !== view.byteOffset) view.set(got);
        }),
      );
    }
    // Every part must be done with `out` before it goes back to the caller.
    const results = await Promise.allSettled(parts);
    for (const r of results) if (r.status === "rejected") throw r.reason;
    return out;
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    if (this.#closed) return shutdown();
    const length = data.length;
    if (length === 0) return this.#next.write(offset, data, opts);
    const max = this.#opts.maxWriteBytes;
    if (length <= max) {
      const direct = this.#direct(offset, offset + length, data, opts);
      if (direct !== undefined) return direct;
      return new Promise((resolve, reject) => {
        this.#enqueue(
          this.#newOp(WRITE, offset, offset + length, data, opts, resolve, reject, null),
        );
      });
    }
    this.#lastEnd = offset + length;
    return new Promise((resolve, reject) => {
      const group: Group = {
        remaining: Math.ceil(length / max),
        error: undefined,
        resolve,
        reject,
      };
      for (let pos = 0; pos < length; pos += max) {
        const n = Math.min(max, length - pos);
        const piece = data.subarray(pos, pos + n);
        this.#enqueue(
          this.#newOp(WRITE, offset + pos, offset + pos + n, piece, opts, noop, noop, group),
        );
      }
    });
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#mutate(TRIM, offset, length, opts);
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#mutate(ZERO, offset, length, opts);
  }

  #mutate(
    kind: Kind,
    offset: number,
    length: number,
    opts: ZeroOptions | undefined,
  ): Promise<void> {
    if (this.#closed) return shutdown();
    if (length === 0) {
      return kind === TRIM
        ? this.#next.trim(offset, 0, opts)
        : this.#next.writeZeroes(offset, 0, opts);
    }
    return new Promise((resolve, reject) => {
      this.#enqueue(this.#newOp(kind, offset, offset + length, null, opts, resolve, reject, null));
    });
  }

  async flush(): Promise<void> {
    if (this.#closed) return shutdown();
    if (this.#live.length > 0) {
      await new Promise<void>((resolve) => this.#flushWaiters.push({ seq: this.#seq, resolve }));
    }
    return this.#next.flush();
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    if (this.#closed) return shutdown();
    return this.#next.blockStatus(offset, length);
  }

  cache(offset: number, length: number): Promise<void> {
    if (this.#closed) return shutdown();
    return this.#next.cache(offset, length);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#live.length > 0) await new Promise<void>((r) => this.#drainWaiters.push(r));
    return this.#next.close();
  }

  #newOp(
    kind: Kind,
    start: number,
    end: number,
    data: Uint8Array | null,
    opts: ZeroOptions | undefined,
    resolve: () => void,
    reject: (err: unknown) => void,
    group: Group | null,
  ): Op {
    const live = this.#live;
    const op: Op = {
      kind,
      start,
      end,
      data,
      opts,
      seq: this.#seq++,
      state: WAITING,
      deps: 0,
      dependents: null,
      mergeable: kind === WRITE && end - start <= this.#opts.mergeMaxBytes,
      live: live.length,
      pool: -1,
      resolve,
      reject,
      group,
      head: false,
      callEnd: end,
      held: null,
    };
    live.push(op);
    if (live.length > this.#stats.maxPending) this.#stats.maxPending = live.length;
    if (kind === WRITE) this.#stats.writes++;
    return op;
  }

  /**
   * The fast path, for writes that could merge with nothing in sight: with
   * nothing queued, room at the backend, nothing in flight overlapping or
   * touching it, and not continuing the previous write (a sequential stream
   * goes through the queue so that its writes merge), the write goes out at
   * once, without a trip through the queue.
   */
  #direct(
    start: number,
    end: number,
    data: Uint8Array,
    opts: WriteOptions | undefined,
  ): Promise<void> | undefined {
    const lastEnd = this.#lastEnd;
    this.#lastEnd = end;
    if (
      !this.#opts.directDispatch ||
      start === lastEnd ||
      this.#inFlight >= this.#opts.maxInFlight ||
      this.#pool.length > 0 ||
      this.#head !== this.#ready.length ||
      this.#again.length > 0
    ) {
      return undefined;
    }
    const live = this.#live;
    for (let i = 0; i < live.length; i++) {
      const p = live[i]!;
      if (p.start <= end && start <= p.end) return undefined;
    }
    const op = this.#newOp(WRITE, start, end, data, opts, noop, noop, null);
    op.state = IN_FLIGHT;
    op.head = true;
    this.#stats.writeBatches++;
    this.#inFlight++;
    let done: Promise<void>;
    try {
      done = this.#next.write(start, data, opts);
    } catch (err) {
      done = Promise.reject(err);
    }
    return done.then(
      () => this.#complete(op, null, undefined),
      (err: unknown) => {
        const failure = err ?? new BlockError("EIO", "backend failed");
        this.#complete(op, null, failure);
        throw failure;
      },
    );
  }

  /** Queue `op` (just made, so last in #live) behind the earlier mutations it overlaps. */
  #enqueue(op: Op): void {
    const live = this.#live;
    const { start, end } = op;
    for (let i = 0; i < op.live; i++) {
      const p = live[i]!;
      if (p.start < end && start < p.end) {
        op.deps++;
        if (p.dependents === null) p.dependents = [op];
        else p.dependents.push(op);
      }
    }
    if (op.deps === 0) this.#makeReady(op);
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(this.#tick);
    }
  }

  readonly #tick = (): void => {
    this.#scheduled = false;
    this.#pump();
  };

  #makeReady(op: Op): void {
    op.state = READY;
    if (op.mergeable) {
      op.pool = this.#pool.length;
      this.#pool.push(op);
    }
    this.#ready.push(op);
  }

  #unpool(op: Op): void {
    const pool = this.#pool;
    const last = pool.pop()!;
    if (last !== op) {
      pool[op.pool] = last;
      last.pool = op.pool;
    }
    op.pool = -1;
  }

  #runIndex(): RunIndex {
    const byStart = new Map<number, Op>();
    const byEnd = new Map<number, Op>();
    for (const op of this.#pool) {
      byStart.set(op.start, op);
      byEnd.set(op.end, op);
    }
    return { byStart, byEnd };
  }

  /** The backend write in flight that ends exactly at `at`, if any. */
  #writingUpTo(at: number): Op | undefined {
    for (const p of this.#live) {
      if (p.head && p.callEnd === at && p.kind === WRITE && p.state === IN_FLIGHT) return p;
    }
    return undefined;
  }

  /** Dispatch ready ops while there is room at the backend. */
  #pump(): void {
    const maxWrite = this.#opts.maxWriteBytes;
    const holdMax = Math.min(maxWrite, this.#opts.holdMaxBytes);
    let index: RunIndex | null = null;
    while (this.#inFlight < this.#opts.maxInFlight) {
      let op: Op | undefined;
      if (this.#again.length > 0) op = this.#again.shift();
      else if (this.#head < this.#ready.length) op = this.#ready[this.#head++];
      else break;
      if (op === undefined || op.state !== READY) continue;
      if (!op.mergeable) {
        this.#dispatch(op, null, op.end - op.start);
        continue;
      }
      // The common case under random I/O: the only mergeable write around
      // has no neighbour to merge with, so no index is needed.
      const alone = this.#pool.length === 1;
      if (!alone) {
        index ??= this.#runIndex();
        // Not the head of its run: whoever dispatches the head takes it along.
        const before = index.byEnd.get(op.start);
        if (before !== undefined && (before.state === READY || before.state === HELD)) {
          this.#grewHeldRun(op, index);
          continue;
        }
      }
      if (this.#opts.holdContiguous) {
        const before = this.#writingUpTo(op.start);
        if (
          before !== undefined &&
          before.held === null &&
          (alone || this.#runBytes(op, holdMax, index!) < holdMax)
        ) {
          op.state = HELD;
          before.held = op;
          this.#held++;
          this.#stats.holds++;
          continue;
        }
      }
      if (alone) {
        this.#dispatch(op, null, op.end - op.start);
        continue;
      }
      let run: Op[] | null = null;
      let bytes = op.end - op.start;
      const byStart = index!.byStart;
      for (let nx = byStart.get(op.end); nx !== undefined; nx = byStart.get(nx.end)) {
        if (nx.state !== READY) break;
        if (bytes + nx.end - nx.start > maxWrite) {
          // The rest of the run starts the next backend write.
          this.#again.push(nx);
          break;
        }
        if (run === null) run = [op];
        run.push(nx);
        bytes += nx.end - nx.start;
      }
      this.#dispatch(op, run, bytes);
    }
    // Drop consumed entries promptly: an op kept reachable here would outlive
    // the young generation.
    if (this.#head === this.#ready.length) {
      this.#ready.length = 0;
      this.#head = 0;
    } else if (this.#head > 256 && this.#head * 2 > this.#ready.length) {
      this.#ready = this.#ready.slice(this.#head);
      this.#head = 0;
    }
  }

  /**
   * `op` joined a run: when the run's head is held and the run has grown to
   * holdMaxBytes, stop holding it, so a long sequential stream keeps more
   * than one write at the backend.
   */
  #grewHeldRun(op: Op, index: RunIndex): void {
    if (this.#held === 0) return;
    let bytes = op.end - op.start;
    let head = op;
    for (
      let prev = index.byEnd.get(head.start);
      prev !== undefined;
      prev = index.byEnd.get(head.start)
    ) {
      if (prev.state !== READY && prev.state !== HELD) break;
      head = prev;
      bytes += head.end - head.start;
    }
    if (head.state !== HELD || bytes < this.#opts.holdMaxBytes) return;
    for (const p of this.#live) if (p.held === head) p.held = null;
    this.#release(head);
  }

  #release(op: Op): void {
    op.state = READY;
    this.#held--;
    this.#again.push(op);
  }

  /** Bytes in the run of ready writes starting at `op`, counted up to `limit`. */
  #runBytes(op: Op, limit: number, index: RunIndex): number {
    let bytes = 0;
    for (let cur: Op | undefined = op; cur !== undefined && bytes < limit; ) {
      bytes += cur.end - cur.start;
      cur = index.byStart.get(cur.end);
      if (cur !== undefined && cur.state !== READY) break;
    }
    return bytes;
  }

  #take(op: Op): void {
    op.state = IN_FLIGHT;
    if (op.pool >= 0) this.#unpool(op);
  }

  /** One backend call for `head`, or for the run `ops` (head first) merged into one write. */
  #dispatch(head: Op, ops: Op[] | null, bytes: number): void {
    this.#inFlight++;
    head.head = true;
    head.callEnd = head.start + bytes;
    head.held = null;
    if (ops === null) this.#take(head);
    else for (const op of ops) this.#take(op);
    let done: Promise<void>;
    try {
      if (head.kind === WRITE) {
        this.#stats.writeBatches++;
        if (ops === null) {
          done = this.#next.write(head.start, head.data!, head.opts);
        } else {
          this.#stats.mergedWrites += ops.length;
          const parts: Uint8Array[] = [];
          let fua = false;
          for (const op of ops) {
            parts.push(op.data!);
            if (op.opts?.fua) fua = true;
          }
          done = this.#next.write(head.start, Buffer.concat(parts, bytes), fua ? FUA : undefined);
        }
      } else if (head.kind === TRIM) {
        done = this.#next.trim(head.start, bytes, head.opts);
      } else {
        done = this.#next.writeZeroes(head.start, bytes, head.opts);
      }
    } catch (err) {
      done = Promise.reject(err);
    }
    done.then(
      () => this.#complete(head, ops, undefined),
      (err: unknown) => this.#complete(head, ops, err ?? new BlockError("EIO", "backend failed")),
    );
  }

  #complete(head: Op, ops: Op[] | null, err: unknown): void {
    this.#inFlight--;
    head.head = false;
    const held = head.held;
    head.held = null;
    if (ops === null) this.#finish(head, err);
    else for (const op of ops) this.#finish(op, err);
    if (held !== null && held.state === HELD) this.#release(held);
    if (this.#flushWaiters.length > 0) this.#wakeFlushes();
    if (this.#live.length === 0 && this.#drainWaiters.length > 0) {
      const waiters = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const w of waiters) w();
    }
    if (this.#head < this.#ready.length || this.#again.length > 0) this.#pump();
  }

  /** Settle one completed op and release the ops that waited for it. */
  #finish(op: Op, err: unknown): void {
    op.state = DONE;
    op.data = null;
    const live = this.#live;
    const last = live.pop()!;
    if (last !== op) {
      live[op.live] = last;
      last.live = op.live;
    }
    const group = op.group;
    if (group === null) {
      if (err === undefined) op.resolve();
      else op.reject(err);
    } else {
      if (err !== undefined && group.error === undefined) group.error = err;
      if (--group.remaining === 0) {
        if (group.error === undefined) group.resolve();
        else group.reject(group.error);
      }
    }
    if (op.dependents !== null) {
      for (const d of op.dependents) {
        if (--d.deps === 0 && d.state === WAITING) this.#makeReady(d);
      }
      op.dependents = null;
    }
  }

  /** Resolve flushes whose earlier mutations have all completed. */
  #wakeFlushes(): void {
    let oldest = Number.POSITIVE_INFINITY;
    for (const op of this.#live) if (op.seq < oldest) oldest = op.seq;
    const still: FlushWaiter[] = [];
    for (const w of this.#flushWaiters) {
      if (w.seq <= oldest) w.resolve();
      else still.push(w);
    }
    this.#flushWaiters = still;
  }
}

function shutdown(): Promise<never> {
  return Promise.reject(new BlockError("ESHUTDOWN", "device is closed"));
}
