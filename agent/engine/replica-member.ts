/**
 * One replica of a replicated volume: its device, its state, and the short
 * stack its requests go through:
 *
 *   throttle   its own pauses and retries, with the replica's (short)
 *              deadline, or the volume's while it is the last ONLINE one
 *              (nothing could take over); stopped when it goes offline
 *   fence      the volume's latch: nothing reaches any replica once failed,
 *              and LeaseLost on this replica fails the whole volume
 *   contain    BlobGone and Forbidden become a ReplicaFault, so the fence
 *              above does not fail the volume for one replica's fault
 *   meter      what reached this replica
 *   device
 *
 * A replica that goes offline keeps its aborted stack (requests still
 * inside reject at once); a resync builds a fresh one.
 */
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from "../nbd/device.ts";
import { StorageError } from "../pageblob/errors.ts";
import type { DirtyLog } from "./dirty-log.ts";
import { type FailureLatch, fence } from "./failure.ts";
import { Layer } from "./layer.ts";
import { type IoCounts, ioCounts, meter } from "./meter.ts";
import { ReplicaFault } from "./replica-errors.ts";
import {
  DEFAULT_THROTTLE_OPTIONS,
  type ThrottleEvent,
  ThrottleLayer,
  type ThrottleOptions,
} from "./throttle.ts";

export type MemberState = "ONLINE" | "OFFLINE" | "RESYNCING" | "REBUILDING";

/** A throttle event of one member: which replica, on which pool, paused or retried. */
export type ReplicaThrottleEvent = ThrottleEvent & { replica: string; pool: string };

/** A copy onto this member in progress. */
export interface CopyProgress {
  copiedBytes: number;
  totalBytes: number;
}

export class Member {
  readonly id: string;
  readonly pool: string;
  device: BlockDevice;
  state: MemberState;
  /** What reached the device, across stacks. */
  readonly io: IoCounts = ioCounts();
  /** Undefined while OFFLINE without a stack (opened offline). */
  stack: ThrottleLayer | undefined;
  #controller = new AbortController();
  /**
   * True while the dirty log describes everything this member misses: it
   * went offline from ONLINE (or from a dirty resync) at this epoch. A member
   * that failed during a full copy, or was opened offline without a log, is
   * not tracking: only a full copy brings it back.
   */
  tracking = false;
  /** The dirty log, opening or open; set while tracking. */
  log: Promise<DirtyLog> | undefined;
  /** The log once open, for status. */
  openLog: DirtyLog | undefined;
  /** The markOffline hook's call for the current offline period. */
  marked: Promise<void> | undefined;
  /** The copy bringing it back, while RESYNCING or REBUILDING. */
  copying: Promise<void> | undefined;
  progress: CopyProgress | undefined;
  /** Why it last went offline. */
  error: string | undefined;
  removed = false;
  /** Counts stacks built: outcomes of an older stack's requests no longer count. */
  generation = 0;

  constructor(id: string, pool: string, device: BlockDevice, state: MemberState) {
    this.id = id;
    this.pool = pool;
    this.device = device;
    this.state = state;
  }

  /** ONLINE or catching up: every mutation goes to it. */
  get written(): boolean {
    return this.state !== "OFFLINE";
  }

  /** Aborted when the member goes offline or is removed. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /**
   * A fresh stack over the device (at open and at every resync). `deadlineMs`
   * is asked at each retry: the replica's short deadline while another
   * member can take over, the volume's once this is the last ONLINE one.
   * Throttle events carry this member's id and pool.
   */
  build(latch: FailureLatch, opts: Partial<ThrottleOptions>, deadlineMs: () => number): ThrottleLayer {
    this.#controller = new AbortController();
    this.generation++;
    const onEvent = opts.onEvent;
    const { id, pool } = this;
    // Built by hand rather than with throttle(): that copies the options, and the
    // deadline must stay a getter the layer reads at every retry.
    this.stack = new ThrottleLayer(fence(contain(meter(this.device, this.io), this.id), { latch }), {
      ...DEFAULT_THROTTLE_OPTIONS,
      ...opts,
      ...(onEvent
        ? {
            onEvent: (event: ThrottleEvent) => {
              const tagged: ReplicaThrottleEvent = { ...event, replica: id, pool };
              onEvent(tagged);
            },
          }
        : {}),
      signal: AbortSignal.any([latch.signal, this.#controller.signal]),
      get deadlineMs() {
        return deadlineMs();
      },
    });
    return this.stack;
  }

  /** Stop the stack: waits end and new requests reject with a ReplicaFault. */
  abort(message: string): void {
    this.#controller.abort(new ReplicaFault(this.id, undefined, `replica ${this.id} ${message}`));
  }
}

/** Turn this replica's BlobGone and Forbidden into a ReplicaFault (see the top of the file). */
function contain(next: BlockDevice, replica: string): BlockDevice {
  const onError = (err: unknown): never => {
    if (err instanceof StorageError && err.fatal && err.code !== "LeaseLost") {
      throw new ReplicaFault(replica, err);
    }
    throw err;
  };
  return new (class Contain extends Layer implements BlockDevice {
    read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
      return next.read(offset, length, into).then(undefined, onError);
    }
    write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
      return next.write(offset, data, opts).then(undefined, onError);
    }
    flush(): Promise<void> {
      return next.flush().then(undefined, onError);
    }
    trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
      return next.trim(offset, length, opts).then(undefined, onError);
    }
    writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
      return next.writeZeroes(offset, length, opts).then(undefined, onError);
    }
    blockStatus(offset: number, length: number): Promise<Extent[]> {
      return next.blockStatus(offset, length).then(undefined, onError);
    }
    cache(offset: number, length: number): Promise<void> {
      return next.cache(offset, length).then(undefined, onError);
    }
    close(): Promise<void> {
      return next.close();
    }
  })(next);
}
