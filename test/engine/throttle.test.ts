import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { RetryDeadlineError, type ThrottleEvent, throttle } from "../../agent/engine/throttle.ts";
import { BlockError } from "../../agent/nbd/device.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { type Call, FaultyDevice, watch } from "./fixtures.ts";

const KiB = 1024;

const throttled = (retryAfterMs?: number) =>
  new StorageError("Throttled", "ServerBusy", {
    status: 503,
    azureCode: "ServerBusy",
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
  });
const transient = () => new StorageError("Transient", "connection reset", { status: 0 });

/** A backend that fails the first `n` calls matching `which`, and notes the fake time of every call. */
function failing(n: number, err: () => StorageError, which: (c: Call) => boolean = () => true) {
  const mem = new MemoryBackend({ size: 1024 * 1024 });
  let left = n;
  const times: number[] = [];
  const dev = new FaultyDevice(mem, (call) => {
    times.push(Date.now());
    if (left > 0 && which(call)) {
      left--;
      return err();
    }
    return undefined;
  });
  return { mem, dev, times };
}

describe("throttle", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("pauses the volume for pauseMs on a throttle, retries, and the client sees only success", async () => {
    const { dev, mem, times } = failing(1, () => throttled());
    const events: ThrottleEvent[] = [];
    const t = throttle(dev, { pauseMs: 3000, random: () => 0, onEvent: (e) => events.push(e) });
    const data = pattern(1, 4 * KiB);
    const w = watch(t.write(0, data));
    await vi.advanceTimersByTimeAsync(0);
    expect(t.stats.paused).toBe(true);
    // A new request during the pause does not reach the backend.
    const r = watch(t.read(8 * KiB, 4 * KiB));
    await vi.advanceTimersByTimeAsync(2999);
    expect(dev.calls).toHaveLength(1);
    expect(w.settled || r.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(w.settled && w.error === undefined).toBe(true);
    expect(r.settled && r.error === undefined).toBe(true);
    expect(dev.calls.map((c) => c.op)).toEqual(["write", "write", "read"]);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(3000);
    expect(times[2]! - times[0]!).toBeGreaterThanOrEqual(3000);
    expect(Buffer.from(await mem.read(0, 4 * KiB)).equals(data)).toBe(true);
    expect(events).toEqual([
      {
        type: "throttle-pause",
        durationMs: 3000,
        level: 0,
        status: 503,
        azureCode: "ServerBusy",
        retryAfterMs: undefined,
      },
      { type: "throttle-resume", pausedMs: 3000 },
    ]);
  });

  it("backs off with longer pauses while the throttle persists, with jitter on top", async () => {
    const { dev, times } = failing(3, () => throttled());
    const events: ThrottleEvent[] = [];
    const t = throttle(dev, {
      pauseMs: 1000,
      jitter: 0.2,
      random: () => 0.5,
      onEvent: (e) => events.push(e),
    });
    const w = watch(t.write(0, pattern(2, 4 * KiB)));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(w.settled && w.error === undefined).toBe(true);
    const pauses = events.filter((e) => e.type === "throttle-pause").map((e) => e.durationMs);
    expect(pauses).toEqual([1100, 2200, 4400]);
    expect(times.map((x) => x - times[0]!)).toEqual([0, 1100, 3300, 7700]);
    expect(t.stats.pauses).toBe(3);
  });

  it("honours Retry-After when it asks for longer than the pause", async () => {
    const { dev, times } = failing(1, () => throttled(7000));
    const t = throttle(dev, { pauseMs: 3000, random: () => 0 });
    const w = watch(t.read(0, 512));
    await vi.advanceTimersByTimeAsync(6999);
    expect(dev.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(w.settled && w.error === undefined).toBe(true);
    expect(times[1]! - times[0]!).toBe(7000);
  });

  it("retries transient errors with backoff for that request only, without pausing others", async () => {
    const { dev, times } = failing(2, transient, (c) => c.offset === 0);
    const events: ThrottleEvent[] = [];
    const t = throttle(dev, { retryBaseMs: 100, random: () => 0, onEvent: (e) => events.push(e) });
    const w = watch(t.write(0, pattern(3, 4 * KiB)));
    await vi.advanceTimersByTimeAsync(0);
    const other = watch(t.write(64 * KiB, pattern(4, 4 * KiB)));
    await vi.advanceTimersByTimeAsync(0);
    expect(other.settled && other.error === undefined).toBe(true);
    expect(w.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.settled && w.error === undefined).toBe(true);
    expect(events.map((e) => (e.type === "retry" ? e.delayMs : -1))).toEqual([100, 200]);
    const firstTries = times.filter((_, i) => dev.calls[i]!.offset === 0);
    expect(firstTries.map((x) => x - firstTries[0]!)).toEqual([0, 100, 300]);
  });

  it("gives up with RetryDeadlineError once the deadline has passed", async () => {
    const { dev } = failing(Number.POSITIVE_INFINITY, () => throttled());
    const t = throttle(dev, {
      pauseMs: 3000,
      maxPauseMs: 10_000,
      deadlineMs: 60_000,
      random: () => 0,
    });
    const w = watch(t.write(0, pattern(5, 4 * KiB)));
    await vi.advanceTimersByTimeAsync(59_000);
    expect(w.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(w.settled).toBe(true);
    expect(w.error).toBeInstanceOf(RetryDeadlineError);
    expect((w.error as RetryDeadlineError).code).toBe("Throttled");
    expect((w.error as RetryDeadlineError).elapsedMs).toBeGreaterThanOrEqual(60_000);
  });

  it("gives transient errors the same deadline, trying last at the deadline", async () => {
    const { dev, times } = failing(Number.POSITIVE_INFINITY, transient);
    const t = throttle(dev, { deadlineMs: 10_000, retryMaxMs: 4000, random: () => 0 });
    const w = watch(t.read(0, 512));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(w.error).toBeInstanceOf(RetryDeadlineError);
    expect(times[times.length - 1]! - times[0]!).toBe(10_000);
  });

  it("passes fatal and non-storage errors through at once, without retrying", async () => {
    const lease = new StorageError("LeaseLost", "LeaseIdMismatchWithBlobOperation", {
      status: 412,
    });
    const { dev } = failing(1, () => lease);
    const t = throttle(dev);
    await expect(t.write(0, pattern(6, 512))).rejects.toBe(lease);
    expect(dev.calls).toHaveLength(1);
    await expect(t.read(2 * 1024 * 1024, 512)).rejects.toBeInstanceOf(BlockError);
    expect(dev.calls).toHaveLength(2);
  });

  it("lets waiting requests go the moment its signal aborts", async () => {
    const { dev } = failing(1, () => throttled());
    const controller = new AbortController();
    const t = throttle(dev, { pauseMs: 3000, signal: controller.signal });
    const w = watch(t.write(0, pattern(7, 512)));
    await vi.advanceTimersByTimeAsync(0);
    const r = watch(t.read(0, 512));
    const reason = new BlockError("EIO", "volume failed");
    controller.abort(reason);
    await vi.advanceTimersByTimeAsync(0);
    expect(w.error).toBe(reason);
    expect(r.error).toBe(reason);
    expect(dev.calls).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});
