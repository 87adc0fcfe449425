/**
 * A volume: the engine layers stacked over one backend, served by the NBD
 * layer as a single BlockDevice.
 *
 *   failure         EIO for everything once failed; answers pending requests;
 *                   how long each client request took, how many are in flight
 *   meter (client)  what clients asked for
 *   align           any byte offset/length -> whole 512-byte sectors
 *   sparse          BLOCK_STATUS and reads of holes from the page map
 *   coalesce        split > 4 MiB, bounded in-flight, merge adjacent writes
 *   throttle        pause on throttling, retry transient errors
 *   fence           nothing reaches the backend once failed
 *   meter (backend) what reached the backend
 *   backend
 *
 * Why this order:
 * - failure is outermost so it sees every request and can answer all of
 *   them when the volume fails, wherever inside they wait; its fence half is
 *   innermost so nothing queued or retrying can reach the storage afterwards.
 *   Client latency is timed there rather than in the client meter: the
 *   guard already has one `.then()` per request, and the timing rides on it.
 * - align sits above everything else, so every inner layer (and the storage)
 *   sees whole sectors only; its read-modify-write reads are then served from
 *   the sparse map when the sector is a hole, and its writes are merged.
 * - sparse sits above coalesce so a read of a hole never queues and the map
 *   sees each client mutation as one range, in client order; its "hole once
 *   the clear completed, unless a write started meanwhile" rule relies on
 *   coalesce below ordering overlapping mutations.
 * - coalesce sits above throttle so what is paused and retried is the merged
 *   backend request (one retry per Put Page, not per client write), and while
 *   a pause holds the in-flight slots new writes pile up in the queue and
 *   leave merged when it ends.
 * - throttle sits just above the fence: its retries are backend requests and
 *   the fence stops them once the volume has failed.
 */
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from "../nbd/device.ts";
import { type AlignLayer, type AlignOptions, align } from "./align.ts";
import type { Clock } from "./clock.ts";
import {
  type CoalesceLayer,
  type CoalesceOptions,
  type CoalesceStats,
  coalesce,
} from "./coalesce.ts";
import {
  type FailureGuard,
  FailureLatch,
  failure,
  fence,
  isVolumeFatal,
  type VolumeFailedEvent,
} from "./failure.ts";
import {
  ClientLatency,
  type LatencyKind,
  type LatencySnapshot,
  type MonotonicClock,
} from "./latency.ts";
import { Layer } from "./layer.ts";
import { type IoCounts, ioCounts, meter } from "./meter.ts";
import { type SparseMap, type SparseOptions, type SparseStats, sparse } from "./sparse.ts";
import {
  type ThrottleEvent,
  type ThrottleOptions,
  type ThrottleStats,
  throttle,
} from "./throttle.ts";

export interface VolumeOptions {
  /** Fired exactly once when the volume fails; log it, remove the export, exit non-zero. */
  onFailed?: (event: VolumeFailedEvent) => void;
  /** Throttle pauses and retries, for logs and metrics. */
  onEvent?: (event: ThrottleEvent) => void;
  /** Time source for pauses and backoff (tests pass fake timers). */
  clock?: Clock;
  /** Monotonic milliseconds for request latency (default performance.now; tests pass their own). */
  latencyClock?: MonotonicClock;
  align?: Partial<AlignOptions>;
  coalesce?: Partial<CoalesceOptions>;
  /** `false` serves without a sparse map (every read and blockStatus goes to the backend). */
  sparse?: Partial<SparseOptions> | false;
  throttle?: Partial<Omit<ThrottleOptions, "clock" | "onEvent" | "signal">>;
}

/** Counters for /metrics. */
export interface VolumeMetrics {
  /** Requests as clients made them. */
  client: IoCounts;
  /** Client request latency by kind, cumulative since open. */
  latency: Record<LatencyKind, LatencySnapshot>;
  /** Client requests in flight now. */
  queueDepth: number;
  /** Requests as they reached the backend. */
  backend: IoCounts;
  /** Requests answered with an error. */
  errors: number;
  readModifyWrites: number;
  coalesce: CoalesceStats;
  throttle: ThrottleStats;
  sparse: SparseStats | undefined;
  failed: boolean;
}

/** The engine stack over one backend; what the NBD layer serves. */
export class Volume extends Layer implements BlockDevice {
  readonly #top: FailureGuard;
  readonly #latch: FailureLatch;
  readonly #parts: VolumeParts;

  /** @internal use openVolume() */
  constructor(top: FailureGuard, latch: FailureLatch, parts: VolumeParts) {
    super(top);
    this.#top = top;
    this.#latch = latch;
    this.#parts = parts;
  }

  /** Set once the volume has failed. */
  get failure(): VolumeFailedEvent | undefined {
    return this.#latch.event;
  }

  /** A snapshot of the counters. */
  metrics(): VolumeMetrics {
    const p = this.#parts;
    return {
      client: { ...p.client },
      latency: p.latency.snapshot(),
      queueDepth: p.latency.inFlight,
      backend: { ...p.backend() },
      errors: this.#top.errors,
      readModifyWrites: p.align.readModifyWrites,
      coalesce: p.coalesce.stats,
      throttle: p.throttle(),
      sparse: p.sparse?.stats,
      failed: this.#latch.failed,
    };
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.#top.read(offset, length, into);
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.#top.write(offset, data, opts);
  }

  flush(): Promise<void> {
    return this.#top.flush();
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#top.trim(offset, length, opts);
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#top.writeZeroes(offset, length, opts);
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#top.blockStatus(offset, length);
  }

  cache(offset: number, length: number): Promise<void> {
    return this.#top.cache(offset, length);
  }

  close(): Promise<void> {
    return this.#top.close();
  }
}

/**
 * @internal What Volume reads its metrics from. `backend` and `throttle` are
 * read at snapshot time: a replicated volume sums its members'.
 */
export interface VolumeParts {
  client: IoCounts;
  latency: ClientLatency;
  backend: () => IoCounts;
  align: AlignLayer;
  sparse: SparseMap | undefined;
  coalesce: CoalesceLayer;
  throttle: () => ThrottleStats;
}

/**
 * Stack the engine over `backend` and load the sparse map. Rejects (and
 * fires `onFailed` when the cause is fatal) if the map cannot be loaded.
 */
export async function openVolume(
  backend: BlockDevice,
  options: VolumeOptions = {},
): Promise<Volume> {
  const latch = new FailureLatch(options.onFailed);
  const backendCounts = ioCounts();
  const bottom = fence(meter(backend, backendCounts), { latch });
  const throttled = throttle(bottom, {
    ...options.throttle,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    signal: latch.signal,
  });
  const { top, parts } = stackAbove(throttled, latch, options, {
    backend: () => backendCounts,
    throttle: () => throttled.stats,
  });
  const volume = new Volume(top, latch, parts);
  await loadMap(volume, parts, latch);
  return volume;
}

/**
 * @internal The upper half of every volume (failure, client meter, align,
 * sparse, coalesce) over `lower`: the throttled backend, or the replica set.
 */
export function stackAbove(
  lower: BlockDevice,
  latch: FailureLatch,
  options: VolumeOptions,
  below: Pick<VolumeParts, "backend" | "throttle">,
): { top: FailureGuard; parts: VolumeParts } {
  const clientCounts = ioCounts();
  const latency = new ClientLatency(options.latencyClock);
  const scheduled = coalesce(lower, options.coalesce);
  const mapped = options.sparse === false ? undefined : sparse(scheduled, options.sparse);
  const aligned = align(mapped ?? scheduled, options.align);
  const top = failure(meter(aligned, clientCounts), { latch, latency });
  return {
    top,
    parts: {
      ...below,
      client: clientCounts,
      latency,
      align: aligned,
      sparse: mapped,
      coalesce: scheduled,
    },
  };
}

/** @internal Load the sparse map of a freshly stacked volume; close it if that fails. */
export async function loadMap(volume: Volume, parts: VolumeParts, latch: FailureLatch): Promise<void> {
  if (!parts.sparse) return;
  try {
    await parts.sparse.load();
  } catch (err) {
    if (isVolumeFatal(err)) latch.trip(err);
    await volume.close().catch(() => {});
    throw err;
  }
}
