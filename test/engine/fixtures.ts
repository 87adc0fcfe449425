/**
 * Small BlockDevice wrappers for engine tests, in the spirit of nbdkit's
 * error and delay filters: they record what reaches them, hold completions
 * until the test releases them, or fail with real StorageErrors.
 */
import { setImmediate as realSetImmediate } from "node:timers";
import { Layer } from "../../agent/engine/layer.ts";
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from "../../agent/nbd/device.ts";

export type OpName =
  | "read"
  | "write"
  | "flush"
  | "trim"
  | "writeZeroes"
  | "blockStatus"
  | "cache"
  | "close";

/** One call as it reached the wrapper. */
export interface Call {
  op: OpName;
  offset: number;
  length: number;
  data?: Uint8Array;
  opts?: ZeroOptions;
}

/** Base wrapper: every call goes through `handle`, which subclasses override. */
export class ProbeDevice extends Layer implements BlockDevice {
  readonly calls: Call[] = [];
  protected readonly inner: BlockDevice;

  constructor(inner: BlockDevice) {
    super(inner);
    this.inner = inner;
  }

  /** Calls of one kind. */
  of(op: OpName): Call[] {
    return this.calls.filter((c) => c.op === op);
  }

  protected handle<T>(call: Call, run: () => Promise<T>): Promise<T> {
    this.calls.push(call);
    return run();
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.handle({ op: "read", offset, length }, () => this.inner.read(offset, length, into));
  }
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.handle({ op: "write", offset, length: data.length, data, opts }, () =>
      this.inner.write(offset, data, opts),
    );
  }
  flush(): Promise<void> {
    return this.handle({ op: "flush", offset: 0, length: 0 }, () => this.inner.flush());
  }
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.handle({ op: "trim", offset, length, opts }, () =>
      this.inner.trim(offset, length, opts),
    );
  }
  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.handle({ op: "writeZeroes", offset, length, opts }, () =>
      this.inner.writeZeroes(offset, length, opts),
    );
  }
  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.handle({ op: "blockStatus", offset, length }, () =>
      this.inner.blockStatus(offset, length),
    );
  }
  cache(offset: number, length: number): Promise<void> {
    return this.handle({ op: "cache", offset, length }, () => this.inner.cache(offset, length));
  }
  close(): Promise<void> {
    return this.handle({ op: "close", offset: 0, length: 0 }, () => this.inner.close());
  }
}

/** A call held by a GatedDevice until the test lets it run. */
export interface Gate {
  call: Call;
  /** Run the call on the inner device now and complete with its result. */
  release(): Promise<void>;
  /** Complete the call with `err` without running it. */
  fail(err: unknown): void;
}

/**
 * Holds every call (except those in `passThrough`) until the test releases
 * it; the inner device sees calls in release order. No timers involved.
 */
export class GatedDevice extends ProbeDevice {
  readonly held: Gate[] = [];
  readonly #passThrough: ReadonlySet<OpName>;
  #waiters: Array<() => void> = [];

  constructor(inner: BlockDevice, passThrough: OpName[] = ["read", "blockStatus", "close"]) {
    super(inner);
    this.#passThrough = new Set(passThrough);
  }

  protected override handle<T>(call: Call, run: () => Promise<T>): Promise<T> {
    this.calls.push(call);
    if (this.#passThrough.has(call.op)) return run();
    return new Promise<T>((resolve, reject) => {
      const gate: Gate = {
        call,
        release: async () => {
          this.#forget(gate);
          try {
            resolve(await run());
          } catch (err) {
            reject(err);
          }
        },
        fail: (err) => {
          this.#forget(gate);
          reject(err);
        },
      };
      this.held.push(gate);
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Resolves once at least `n` calls are held (at once, if they are already). */
  async whenHeld(n = 1): Promise<void> {
    while (this.held.length < n) await new Promise<void>((wake) => this.#waiters.push(wake));
  }

  /** Release every held call, oldest first; returns how many. */
  async releaseAll(): Promise<number> {
    const gates = [...this.held];
    for (const g of gates) await g.release();
    return gates.length;
  }

  #forget(gate: Gate): void {
    const i = this.held.indexOf(gate);
    if (i >= 0) this.held.splice(i, 1);
  }
}

/** Decides, per call, whether to fail it (return the error) or run it. */
export type FaultPlan = (call: Call, index: number) => unknown;

/** Fails calls as `plan` decides, with whatever error it returns. */
export class FaultyDevice extends ProbeDevice {
  plan: FaultPlan;
  #index = 0;

  constructor(inner: BlockDevice, plan: FaultPlan = () => undefined) {
    super(inner);
    this.plan = plan;
  }

  protected override handle<T>(call: Call, run: () => Promise<T>): Promise<T> {
    this.calls.push(call);
    const err = this.plan(call, this.#index++);
    if (err !== undefined) return Promise.reject(err);
    return run();
  }
}

/**
 * Holds every request but `close` `ms` before it goes down, as nbdkit's
 * delay filter does: a network between a writer and its storage, for the
 * bench. It records nothing (a bench sends too many payloads to keep).
 */
export class DelayedDevice extends ProbeDevice {
  readonly #ms: number;

  constructor(inner: BlockDevice, ms: number) {
    super(inner);
    this.#ms = ms;
  }

  protected override async handle<T>(call: Call, run: () => Promise<T>): Promise<T> {
    if (call.op !== "close") await new Promise((res) => setTimeout(res, this.#ms));
    return run();
  }
}

/**
 * Let every pending promise continuation run: a macrotask turn drains the
 * microtask queue completely. Not a sleep: nothing here waits on I/O or time.
 * Uses node:timers directly so it still works under vi.useFakeTimers().
 */
export function settle(): Promise<void> {
  return new Promise((resolve) => realSetImmediate(resolve));
}

/**
 * A closed-loop client like fio at iodepth `depth`: `write(i)` for i from 0
 * to total-1, each completion issuing the next, while `gated` completes one
 * backend call at a time, oldest first. Rejects with the first write error.
 */
export async function closedLoop(
  gated: GatedDevice,
  total: number,
  depth: number,
  write: (i: number) => Promise<void>,
): Promise<void> {
  let issued = 0;
  let completed = 0;
  let failure: { err: unknown } | undefined;
  const issue = (): void => {
    const i = issued++;
    write(i).then(
      () => {
        completed++;
        if (issued < total) issue();
      },
      (err: unknown) => {
        failure ??= { err };
      },
    );
  };
  for (let i = 0; i < Math.min(depth, total); i++) issue();
  while (completed < total) {
    if (failure !== undefined) throw failure.err;
    await settle();
    await gated.held[0]?.release();
  }
}

/** Track a promise's outcome without awaiting it. */
export function watch<T>(p: Promise<T>): {
  settled: boolean;
  value?: T;
  error?: unknown;
  promise: Promise<T>;
} {
  const state: { settled: boolean; value?: T; error?: unknown; promise: Promise<T> } = {
    settled: false,
    promise: p,
  };
  p.then(
    (value) => {
      state.settled = true;
      state.value = value;
    },
    (error: unknown) => {
      state.settled = true;
      state.error = error;
    },
  );
  return state;
}
