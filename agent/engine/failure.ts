/**
 * Failure: a volume whose lease is lost, whose blob is gone, whose
 * credentials are refused or whose storage stayed unreachable past the retry
 * deadline is failed for good (DESIGN.md, "Failure").
 *
 * Three pieces share one `FailureLatch`:
 *
 * - `failure(next)` is the outermost layer. It rejects every new request with
 *   EIO once the latch is set, and answers EIO to every request still
 *   pending then, whatever it completes with. Those complete promptly:
 *   queued ones are refused by the fence as they are dispatched, throttle
 *   waits end on the latch's signal, and calls already at the backend
 *   return. Not sooner, on purpose: a request's buffers (write data, read
 *   `into`) are lent until it settles, and a backend call still running may
 *   be using them. It sets the latch when a request fails with a fatal
 *   StorageError or a RetryDeadlineError, and turns every other error that
 *   is not a BlockError into EIO. Given a `ClientLatency`, it also times
 *   every request it lets in and counts it in flight: the timing rides on
 *   the guard's own completion handlers, so it costs no promise of its own.
 * - `fence(backend)` is the innermost layer. It lets no call through to the
 *   backend once the latch is set (requests already inside the stack, queued
 *   or retrying, must not land after a fencing: the storage would refuse a
 *   write with a broken lease, but we must not even try), and sets the latch
 *   on a fatal StorageError the moment the backend returns it.
 * - The latch fires `onFailed` exactly once and aborts its `signal`, which
 *   the throttle layer uses to stop its waits.
 *
 * Concurrency: the latch flips synchronously; after `trip()` returns no call
 * can start at the fence and no request can succeed at the guard.
 */
import {
  type BlockDevice,
  BlockError,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from "../nbd/device.ts";
import { StorageError, type StorageErrorCode } from "../pageblob/errors.ts";
import type { ClientLatency, Completion, LatencyHistogram } from "./latency.ts";
import { Layer } from "./layer.ts";
import { RetryDeadlineError } from "./throttle.ts";

/** Why the volume failed. */
export type FailureReason = "lease-lost" | "blob-gone" | "forbidden" | "retry-deadline";

/** The JSON event the caller logs before removing the export and exiting non-zero. */
export interface VolumeFailedEvent {
  type: "volume-failed";
  reason: FailureReason;
  /** StorageError code of the failure (of the last failure for a deadline). */
  code: StorageErrorCode;
  /** HTTP status, 0 for network-level failures. */
  status: number;
  azureCode: string | undefined;
  message: string;
}

/** True for errors that fail the volume. */
export function isVolumeFatal(err: unknown): err is StorageError | RetryDeadlineError {
  return (err instanceof StorageError && err.fatal) || err instanceof RetryDeadlineError;
}

const REASONS: Partial<Record<StorageErrorCode, FailureReason>> = {
  LeaseLost: "lease-lost",
  BlobGone: "blob-gone",
  Forbidden: "forbidden",
};

/** Set once, never cleared: the volume has failed. */
export class FailureLatch {
  #event: VolumeFailedEvent | undefined;
  readonly #controller = new AbortController();
  readonly #onFailed: ((event: VolumeFailedEvent) => void) | undefined;

  /** `onFailed` must not throw; what it throws is ignored. */
  constructor(onFailed?: (event: VolumeFailedEvent) => void) {
    this.#onFailed = onFailed;
  }

  get failed(): boolean {
    return this.#event !== undefined;
  }

  /** The failure, once failed. */
  get event(): VolumeFailedEvent | undefined {
    return this.#event;
  }

  /** Aborted when the volume fails. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Fail the volume because of `cause`; false when it had already failed. */
  trip(cause: StorageError | RetryDeadlineError): boolean {
    if (this.#event !== undefined) return false;
    const storage =
      cause instanceof StorageError ? cause : (cause.cause as StorageError | undefined);
    const event: VolumeFailedEvent = {
      type: "volume-failed",
      reason:
        cause instanceof RetryDeadlineError
          ? "retry-deadline"
          : (REASONS[cause.code] ?? "forbidden"),
      code: cause.code,
      status: storage?.status ?? 0,
      azureCode: storage?.azureCode,
      message: cause.message,
    };
    this.#event = event;
    this.#controller.abort(volumeFailed(event));
    try {
      this.#onFailed?.(event);
    } catch {
      // The caller's logging must not stop the volume from failing cleanly.
    }
    return true;
  }
}

function volumeFailed(event: VolumeFailedEvent): BlockError {
  return new BlockError("EIO", `volume failed (${event.reason}): ${event.message}`);
}

export interface FailureOptions {
  latch: FailureLatch;
}

export interface GuardOptions extends FailureOptions {
  /** Time the requests let in, and count them in flight (the client's view). */
  latency?: ClientLatency | undefined;
}

/** The outermost layer: EIO for everything once the volume has failed. */
export function failure(next: BlockDevice, opts: GuardOptions): FailureGuard {
  return new FailureGuard(next, opts.latch, opts.latency);
}

export class FailureGuard extends Layer implements BlockDevice {
  readonly #next: BlockDevice;
  readonly #latch: FailureLatch;
  readonly #latency: ClientLatency | undefined;
  /** Requests in progress. */
  #pending = 0;
  #closing: Promise<void> | undefined;
  #drained: (() => void) | undefined;
  #errors = 0;

  constructor(next: BlockDevice, latch: FailureLatch, latency?: ClientLatency) {
    super(next);
    this.#next = next;
    this.#latch = latch;
    this.#latency = latency;
  }

  /** Requests that failed (for metrics). */
  get errors(): number {
    return this.#errors;
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    return (
      this.#gate() ??
      this.#track(this.#latency?.read, () => this.#next.read(offset, length, into))
    );
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return (
      this.#gate() ?? this.#track(this.#latency?.write, () => this.#next.write(offset, data, opts))
    );
  }

  flush(): Promise<void> {
    return this.#gate() ?? this.#track(this.#latency?.flush, () => this.#next.flush());
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return (
      this.#gate() ?? this.#track(this.#latency?.trim, () => this.#next.trim(offset, length, opts))
    );
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return (
      this.#gate() ??
      this.#track(this.#latency?.zero, () => this.#next.writeZeroes(offset, length, opts))
    );
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#gate() ?? this.#track(null, () => this.#next.blockStatus(offset, length));
  }

  cache(offset: number, length: number): Promise<void> {
    return this.#gate() ?? this.#track(null, () => this.#next.cache(offset, length));
  }

  /**
   * Wait for requests in progress, then close the stack (which drains its
   * queues). A failed volume skips the wait: nothing more may reach the
   * backend, and its requests are being answered with EIO.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#pending > 0 && !this.#latch.failed) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
    }
    try {
      await this.#next.close();
    } catch (err) {
      if (!this.#latch.failed) throw err;
    }
  }

  #gate(): Promise<never> | undefined {
    const event = this.#latch.event;
    if (event !== undefined) {
      this.#errors++;
      return Promise.reject(volumeFailed(event));
    }
    if (this.#closing !== undefined) {
      return Promise.reject(new BlockError("ESHUTDOWN", "device is closed"));
    }
    return undefined;
  }

  /**
   * Count a request in progress and turn its outcome into the guard's answer
   * (EIO once failed). A synchronous throw from below is answered the same way.
   * With a ClientLatency the request is timed in `histogram` (in flight only
   * when null) by a timing whose handlers finish it and go on to the
   * guard's: still one `.then()` per request.
   */
  #track<T>(histogram: LatencyHistogram | null | undefined, call: () => Promise<T>): Promise<T> {
    this.#pending++;
    const latency = this.#latency;
    if (latency === undefined) {
      try {
        return call().then(this.#onValue, this.#onError);
      } catch (err) {
        return this.#onError(err);
      }
    }
    const timing = latency.begin(histogram ?? null, this.#completion);
    try {
      return call().then(timing.done, timing.failed);
    } catch (err) {
      return timing.failed(err);
    }
  }

  #settled(): void {
    if (--this.#pending === 0) this.#drained?.();
  }

  // Shared handlers rather than closures per request: this is the hot path.
  readonly #onValue = <T>(value: T): T => {
    this.#settled();
    const event = this.#latch.event;
    // Once failed, a request that still completes is answered EIO too.
    if (event !== undefined) {
      this.#errors++;
      throw volumeFailed(event);
    }
    return value;
  };

  readonly #onError = (err: unknown): never => {
    this.#settled();
    if (isVolumeFatal(err)) this.#latch.trip(err);
    this.#errors++;
    const event = this.#latch.event;
    if (event !== undefined) throw volumeFailed(event);
    if (err instanceof BlockError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new BlockError("EIO", message, { cause: err });
  };

  /** The same handlers, for a request timing to go on to. */
  readonly #completion: Completion = { onValue: this.#onValue, onError: this.#onError };
}

/** The innermost layer: no call reaches the backend once the volume has failed. */
export function fence(backend: BlockDevice, opts: FailureOptions): Fence {
  return new Fence(backend, opts.latch);
}

export class Fence extends Layer implements BlockDevice {
  readonly #next: BlockDevice;
  readonly #latch: FailureLatch;
  /** Calls refused because the volume had failed (for tests and metrics). */
  refused = 0;

  constructor(next: BlockDevice, latch: FailureLatch) {
    super(next);
    this.#next = next;
    this.#latch = latch;
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.#closed() ?? this.#next.read(offset, length, into).then(undefined, this.#onError);
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.#closed() ?? this.#next.write(offset, data, opts).then(undefined, this.#onError);
  }

  flush(): Promise<void> {
    return this.#closed() ?? this.#next.flush().then(undefined, this.#onError);
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#closed() ?? this.#next.trim(offset, length, opts).then(undefined, this.#onError);
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return (
      this.#closed() ?? this.#next.writeZeroes(offset, length, opts).then(undefined, this.#onError)
    );
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#closed() ?? this.#next.blockStatus(offset, length).then(undefined, this.#onError);
  }

  cache(offset: number, length: number): Promise<void> {
    return this.#closed() ?? this.#next.cache(offset, length).then(undefined, this.#onError);
  }

  /** Always passed on: the backend must still release its connections. */
  close(): Promise<void> {
    return this.#next.close();
  }

  #closed(): Promise<never> | undefined {
    const event = this.#latch.event;
    if (event === undefined) return undefined;
    this.refused++;
    return Promise.reject(volumeFailed(event));
  }

  /** Trip the latch the moment the backend reports a fatal error. */
  readonly #onError = (err: unknown): never => {
    if (err instanceof StorageError && err.fatal) this.#latch.trip(err);
    throw err;
  };
}
