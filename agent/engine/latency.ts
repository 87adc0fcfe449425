/**
 * Request latency as clients see it: one fixed-bucket histogram per kind of
 * request, and the number of requests in flight (the queue depth).
 *
 * Buckets are log-spaced, about 1.5x apart (1, 1.5, 2, 3, 5, 7.5 per
 * decade), from 50 µs to 60 s, plus one bucket above. Fixed buckets make a
 * record a few comparisons and one increment, make two snapshots
 * subtractable (percentiles over a window are a difference of counts), and
 * are what Prometheus histograms expose anyway.
 *
 * Concurrency: single-threaded counters. The hot path (`begin` and the
 * completion handlers) allocates nothing once as many timings as the
 * highest concurrency seen exist: they are kept on a free stack and reused.
 */

/**
 * Upper bounds of the buckets in microseconds. Integers, so that the bounds
 * in milliseconds and seconds (µs / 1e3, µs / 1e6) print exactly ("0.000075").
 */
export const LATENCY_BOUNDS_US: readonly number[] = Object.freeze([
  50, 75,
  100, 150, 200, 300, 500, 750,
  1_000, 1_500, 2_000, 3_000, 5_000, 7_500,
  10_000, 15_000, 20_000, 30_000, 50_000, 75_000,
  100_000, 150_000, 200_000, 300_000, 500_000, 750_000,
  1_000_000, 1_500_000, 2_000_000, 3_000_000, 5_000_000, 7_500_000,
  10_000_000, 15_000_000, 20_000_000, 30_000_000, 50_000_000, 60_000_000,
]);

/** The same bounds in milliseconds. */
export const LATENCY_BOUNDS_MS: readonly number[] = Object.freeze(
  LATENCY_BOUNDS_US.map((us) => us / 1000),
);

/** Buckets per histogram: one per bound and one above the highest. */
export const LATENCY_BUCKETS = LATENCY_BOUNDS_US.length + 1;

/** The kinds of request timed. */
export const LATENCY_KINDS = ["read", "write", "flush", "trim", "zero"] as const;
export type LatencyKind = (typeof LATENCY_KINDS)[number];

/** A histogram's state at one moment; the bounds are LATENCY_BOUNDS_MS. */
export interface LatencySnapshot {
  /** Requests per bucket (not cumulative); the last bucket is above 60 s. */
  counts: number[];
  count: number;
  sumMs: number;
}

// Typed array: the bounds are read on every request.
const BOUNDS_MS = Float64Array.from(LATENCY_BOUNDS_MS);

/** Counts of request durations in fixed buckets. */
export class LatencyHistogram {
  /**
   * Per bucket, not cumulative. Float64: exact integers up to 2^53, where a
   * Uint32 would wrap after about eight hours at 140k requests per second.
   */
  readonly counts = new Float64Array(LATENCY_BUCKETS);
  count = 0;
  sumMs = 0;

  /** Count one request that took `ms` milliseconds. */
  record(ms: number): void {
    // Binary search for the first bound >= ms; past the last: the overflow bucket.
    let lo = 0;
    let hi = BOUNDS_MS.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (BOUNDS_MS[mid]! < ms) lo = mid + 1;
      else hi = mid;
    }
    this.counts[lo]!++;
    this.count++;
    this.sumMs += ms;
  }

  snapshot(): LatencySnapshot {
    return { counts: Array.from(this.counts), count: this.count, sumMs: this.sumMs };
  }
}

/** What happened between two snapshots of the same histogram. */
export function latencySince(now: LatencySnapshot, before: LatencySnapshot): LatencySnapshot {
  return {
    counts: now.counts.map((n, i) => n - (before.counts[i] ?? 0)),
    count: now.count - before.count,
    sumMs: now.sumMs - before.sumMs,
  };
}

/**
 * The `q` quantile (0..1) in milliseconds, interpolated linearly inside its
 * bucket as Prometheus' histogram_quantile() does: 0 when nothing was
 * counted, the highest bound (60 s) when it falls in the overflow bucket.
 */
export function latencyQuantile(counts: ArrayLike<number>, q: number): number {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i]!;
  if (total === 0) return 0;
  const rank = Math.min(Math.max(q, 0), 1) * total;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i]!;
    if (n > 0 && below + n >= rank) {
      if (i >= BOUNDS_MS.length) return BOUNDS_MS[BOUNDS_MS.length - 1]!;
      const lower = i === 0 ? 0 : BOUNDS_MS[i - 1]!;
      return lower + ((BOUNDS_MS[i]! - lower) * (rank - below)) / n;
    }
    below += n;
  }
  return BOUNDS_MS[BOUNDS_MS.length - 1]!;
}

/**
 * p50 and p99 in milliseconds, rounded to the microsecond: interpolation
 * leaves float noise (0.30000000000000004) that a report need not carry.
 */
export function latencyPercentiles(counts: ArrayLike<number>): { p50: number; p99: number } {
  return {
    p50: Math.round(latencyQuantile(counts, 0.5) * 1000) / 1000,
    p99: Math.round(latencyQuantile(counts, 0.99) * 1000) / 1000,
  };
}

/** Monotonic milliseconds; performance.now() by default. */
export type MonotonicClock = () => number;

/**
 * Where a timed request's outcome goes once it is timed, in the same
 * handler: the layer that times requests passes its own completion handlers
 * here rather than chaining a second `.then()` (failure.ts).
 */
export interface Completion {
  readonly onValue: <T>(value: T) => T;
  readonly onError: (err: unknown) => never;
}

/**
 * One request being timed. Its handlers are bound once, when it is made, so
 * a request costs no closure: they are passed straight to `.then()`.
 */
export class RequestTiming {
  start = 0;
  /** Null for requests counted in flight but not timed (blockStatus, cache). */
  histogram: LatencyHistogram | null = null;
  /** Null: the request's own value or error is passed on as it is. */
  completion: Completion | null = null;
  readonly #owner: ClientLatency;

  constructor(owner: ClientLatency) {
    this.#owner = owner;
  }

  readonly done = <T>(value: T): T => {
    // Read before finish(): that puts this timing back up for reuse.
    const completion = this.completion;
    this.#owner.finish(this);
    return completion === null ? value : completion.onValue(value);
  };

  readonly failed = (err: unknown): never => {
    const completion = this.completion;
    this.#owner.finish(this);
    if (completion === null) throw err;
    return completion.onError(err);
  };
}

/** Latency by kind and the requests in flight, for one volume's clients. */
export class ClientLatency {
  readonly read = new LatencyHistogram();
  readonly write = new LatencyHistogram();
  readonly flush = new LatencyHistogram();
  readonly trim = new LatencyHistogram();
  readonly zero = new LatencyHistogram();
  /** Requests started and not yet completed. */
  inFlight = 0;
  readonly #now: MonotonicClock;
  /** Free timings in [0, #free); never shrunk, so reuse allocates nothing. */
  readonly #stack: RequestTiming[] = [];
  #free = 0;

  constructor(now: MonotonicClock = () => performance.now()) {
    this.#now = now;
  }

  /**
   * Start timing a request; `histogram` null counts it in flight only. Its
   * completion handlers go on to `completion` when given.
   */
  begin(histogram: LatencyHistogram | null, completion: Completion | null = null): RequestTiming {
    const timing = this.#free > 0 ? this.#stack[--this.#free]! : new RequestTiming(this);
    timing.histogram = histogram;
    timing.completion = completion;
    timing.start = this.#now();
    this.inFlight++;
    return timing;
  }

  /** The request completed (either way): record it and reuse its timing. */
  finish(timing: RequestTiming): void {
    timing.histogram?.record(this.#now() - timing.start);
    timing.histogram = null;
    timing.completion = null;
    this.inFlight--;
    this.#stack[this.#free++] = timing;
  }

  /** Snapshots by kind. */
  snapshot(): Record<LatencyKind, LatencySnapshot> {
    return {
      read: this.read.snapshot(),
      write: this.write.snapshot(),
      flush: this.flush.snapshot(),
      trim: this.trim.snapshot(),
      zero: this.zero.snapshot(),
    };
  }
}
