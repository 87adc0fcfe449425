/**
 * Throttle layer: turns storage throttling and transient failures into
 * latency (DESIGN.md, "Throttling").
 *
 * - `Throttled` (503 ServerBusy, 500 OperationTimedOut): the whole volume
 *   pauses new I/O for `pauseMs`, then the failed requests are retried. If the
 *   throttle persists (a retry is throttled again) the next pause is longer
 *   (doubling up to `maxPauseMs`); every pause gets up to `jitter` extra so
 *   many volumes on one account do not retry in step, and lasts at least the
 *   service's Retry-After.
 * - `Transient` (other 5xx, resets, timeouts): only the failed request backs
 *   off (exponential with jitter, Retry-After honoured) and retries. A page
 *   write whose attempt was left in doubt comes back with a Retry-After
 *   covering the doubt (pageblob/in-doubt.ts): resending it sooner could let
 *   the abandoned attempt land after the retry.
 * - A request that fails again once `deadlineMs` have passed since its first
 *   failure rejects with `RetryDeadlineError`, which fails the volume like a
 *   fatal error. (A pause under way at the deadline is waited out first, so
 *   the volume fails at most `maxPauseMs` late.) So does a transient failure
 *   whose Retry-After ends past the deadline: the retry could not be sent in
 *   time, and a replica then goes offline at once instead of holding the
 *   client's write until it may.
 * - Everything else (fatal StorageErrors, BlockErrors) passes straight up.
 *
 * Concurrency: requests run concurrently. While a pause is on, requests that
 * arrive wait for it to end before going to `next`; requests already at the
 * backend finish normally. One timer per pause, none per request on the
 * success path.
 */
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from "../nbd/device.ts";
import { StorageError, type StorageErrorCode } from "../pageblob/errors.ts";
import { type Clock, SYSTEM_CLOCK } from "./clock.ts";
import { Layer } from "./layer.ts";

/** How long a throttle pauses the volume. */
export const DEFAULT_PAUSE_MS = 3_000;
/** Longest pause while a throttle persists. */
export const DEFAULT_MAX_PAUSE_MS = 30_000;
/** How long a request keeps retrying before the volume fails. */
export const DEFAULT_DEADLINE_MS = 120_000;
/** First backoff after a transient failure. */
export const DEFAULT_RETRY_BASE_MS = 100;
/** Longest backoff after a transient failure. */
export const DEFAULT_RETRY_MAX_MS = 5_000;
/** Random extra added to every wait, as a fraction of it. */
export const DEFAULT_JITTER = 0.2;

/** What the throttle layer reports for logs and metrics. */
export type ThrottleEvent =
  | {
      type: "throttle-pause";
      durationMs: number;
      /** 0 for the first pause of an episode, counting up while it persists. */
      level: number;
      status: number;
      azureCode: string | undefined;
      retryAfterMs: number | undefined;
    }
  | { type: "throttle-resume"; pausedMs: number }
  | { type: "retry"; code: StorageErrorCode; status: number; attempt: number; delayMs: number };

export interface ThrottleOptions {
  pauseMs: number;
  maxPauseMs: number;
  deadlineMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  jitter: number;
  clock: Clock;
  /** Uniform in [0, 1); injectable so tests know the jitter. */
  random: () => number;
  onEvent?: (event: ThrottleEvent) => void;
  /** Aborted when the volume fails: waiting requests give up at once. */
  signal?: AbortSignal;
}

export const DEFAULT_THROTTLE_OPTIONS: ThrottleOptions = {
  pauseMs: DEFAULT_PAUSE_MS,
  maxPauseMs: DEFAULT_MAX_PAUSE_MS,
  deadlineMs: DEFAULT_DEADLINE_MS,
  retryBaseMs: DEFAULT_RETRY_BASE_MS,
  retryMaxMs: DEFAULT_RETRY_MAX_MS,
  jitter: DEFAULT_JITTER,
  clock: SYSTEM_CLOCK,
  random: Math.random,
};

/** A request kept failing with retriable errors past the deadline. */
export class RetryDeadlineError extends Error {
  /** Code of the last failure. */
  readonly code: StorageErrorCode;
  readonly elapsedMs: number;
  constructor(last: StorageError, elapsedMs: number) {
    super(`still failing after ${elapsedMs} ms of retries: ${last.message}`, { cause: last });
    this.name = "RetryDeadlineError";
    this.code = last.code;
    this.elapsedMs = elapsedMs;
  }
}

export interface ThrottleStats {
  pauses: number;
  pausedMs: number;
  retries: number;
  deadlines: number;
  paused: boolean;
}

/** Wrap `next` so throttling and transient failures are retried. */
export function throttle(next: BlockDevice, opts: Partial<ThrottleOptions> = {}): ThrottleLayer {
  return new ThrottleLayer(next, { ...DEFAULT_THROTTLE_OPTIONS, ...opts });
}

export class ThrottleLayer extends Layer implements BlockDevice {
  readonly #next: BlockDevice;
  readonly #opts: ThrottleOptions;
  /** Resolves when the current pause ends; null when not paused. */
  #pause: Promise<void> | null = null;
  /** Consecutive pauses without a successful retry in between. */
  #level = 0;
  readonly #timers = new Map<unknown, (err: unknown) => void>();
  #stats = { pauses: 0, pausedMs: 0, retries: 0, deadlines: 0 };

  constructor(next: BlockDevice, opts: ThrottleOptions) {
    super(next);
    this.#next = next;
    this.#opts = opts;
    opts.signal?.addEventListener("abort", () => this.#abort(), { once: true });
  }

  get stats(): ThrottleStats {
    return { ...this.#stats, paused: this.#pause !== null };
  }

  // read and write spell #run out: their success path allocates one closure
  // (the rejection handler), not two.
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#waiting())
      return this.#retrying(() => this.#next.read(offset, length, into), undefined);
    return this.#next
      .read(offset, length, into)
      .then(undefined, (err: unknown) =>
        this.#retrying(() => this.#next.read(offset, length, into), err),
      );
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    if (this.#waiting())
      return this.#retrying(() => this.#next.write(offset, data, opts), undefined);
    return this.#next
      .write(offset, data, opts)
      .then(undefined, (err: unknown) =>
        this.#retrying(() => this.#next.write(offset, data, opts), err),
      );
  }

  flush(): Promise<void> {
    return this.#run(() => this.#next.flush());
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#run(() => this.#next.trim(offset, length, opts));
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#run(() => this.#next.writeZeroes(offset, length, opts));
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#run(() => this.#next.blockStatus(offset, length));
  }

  cache(offset: number, length: number): Promise<void> {
    return this.#run(() => this.#next.cache(offset, length));
  }

  close(): Promise<void> {
    this.#abort();
    return this.#next.close();
  }

  #run<T>(attempt: () => Promise<T>): Promise<T> {
    if (this.#waiting()) return this.#retrying(attempt, undefined);
    return attempt().then(undefined, (err: unknown) => this.#retrying(attempt, err));
  }

  /** New requests wait: a pause is on, or the volume has failed. */
  #waiting(): boolean {
    return this.#pause !== null || this.#opts.signal?.aborted === true;
  }

  /** The slow path: wait out pauses, retry retriable failures until the deadline. */
  async #retrying<T>(attempt: () => Promise<T>, firstError: unknown): Promise<T> {
    const clock = this.#opts.clock;
    let err = firstError;
    let since: number | undefined;
    let tries = 0;
    // Without a first error the request has not failed: it only waits out the pause.
    for (let failed = err !== undefined; ; failed = true) {
      if (failed) {
        if (!(err instanceof StorageError) || !err.retriable) throw err;
        since ??= clock.now();
        const elapsed = clock.now() - since;
        if (elapsed >= this.#opts.deadlineMs) throw this.#deadline(err, elapsed);
        if (
          err.code === "Transient" &&
          err.retryAfterMs !== undefined &&
          elapsed + err.retryAfterMs > this.#opts.deadlineMs
        ) {
          throw this.#deadline(err, elapsed);
        }
        await this.#beforeRetry(err, ++tries, elapsed);
      }
      await this.#waitPause();
      try {
        const value = await attempt();
        this.#level = 0;
        return value;
      } catch (e) {
        err = e;
      }
    }
  }

  /** A throttle pauses the volume; any other retriable failure backs off this request. */
  #beforeRetry(err: StorageError, tries: number, elapsed: number): Promise<void> | undefined {
    this.#stats.retries++;
    if (err.code === "Throttled") {
      this.#startPause(err);
      return undefined;
    }
    // The last wait ends at the deadline, so the last try happens there.
    const delay = Math.min(this.#backoff(tries, err.retryAfterMs), this.#opts.deadlineMs - elapsed);
    this.#opts.onEvent?.({
      type: "retry",
      code: err.code,
      status: err.status,
      attempt: tries,
      delayMs: delay,
    });
    return this.#sleep(delay);
  }

  #deadline(err: StorageError, elapsed: number): RetryDeadlineError {
    this.#stats.deadlines++;
    return new RetryDeadlineError(err, elapsed);
  }

  /** Start a volume-wide pause unless one is already on (this failure then joins it). */
  #startPause(err: StorageError): void {
    if (this.#pause !== null) return;
    const o = this.#opts;
    const base = Math.min(o.maxPauseMs, o.pauseMs * 2 ** this.#level);
    const duration = Math.round(
      Math.max(base * (1 + o.jitter * o.random()), err.retryAfterMs ?? 0),
    );
    const level = this.#level++;
    this.#stats.pauses++;
    this.#stats.pausedMs += duration;
    o.onEvent?.({
      type: "throttle-pause",
      durationMs: duration,
      level,
      status: err.status,
      azureCode: err.azureCode,
      retryAfterMs: err.retryAfterMs,
    });
    this.#pause = this.#sleep(duration).then(
      () => {
        this.#pause = null;
        o.onEvent?.({ type: "throttle-resume", pausedMs: duration });
      },
      (abort: unknown) => {
        this.#pause = null;
        throw abort;
      },
    );
    // Waiters get the rejection; this keeps an abort from being unhandled here.
    this.#pause.catch(() => {});
  }

  #waitPause(): Promise<void> | undefined {
    const signal = this.#opts.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return this.#pause ?? undefined;
  }

  #backoff(tries: number, retryAfterMs: number | undefined): number {
    const o = this.#opts;
    const base = Math.min(o.retryMaxMs, o.retryBaseMs * 2 ** (tries - 1));
    return Math.round(Math.max(base * (1 + o.jitter * o.random()), retryAfterMs ?? 0));
  }

  #sleep(ms: number): Promise<void> {
    const signal = this.#opts.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const clock = this.#opts.clock;
    return new Promise((resolve, reject) => {
      const handle = clock.setTimeout(() => {
        this.#timers.delete(handle);
        resolve();
      }, ms);
      this.#timers.set(handle, reject);
    });
  }

  /** The volume failed or closed: stop every wait now rather than at its timer. */
  #abort(): void {
    const reason = this.#opts.signal?.reason ?? new Error("throttle layer closed");
    for (const [handle, reject] of this.#timers) {
      this.#opts.clock.clearTimeout(handle);
      reject(reason);
    }
    this.#timers.clear();
  }
}
