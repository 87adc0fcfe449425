import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { StatsWindow } from "../../agent/engine/stats-window.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import { BlockError } from "../../agent/nbd/device.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { FaultyDevice, GatedDevice, settle, watch } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("StatsWindow", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("counts since open, percentiles since the previous take", async () => {
    let now = 0;
    const mem = new MemoryBackend({ size: 16 * MiB });
    const vol = await openVolume(mem, { latencyClock: () => now, sparse: false });
    // Before the window: not in its percentiles, but in its counters.
    await vol.write(0, pattern(1, 4 * KiB));
    const window = new StatsWindow(() => vol.metrics());

    // Window 1: 99 reads of 0.12 ms, one of 190 ms; two writes of 2 ms.
    for (let i = 0; i < 100; i++) {
      const r = vol.read(0, 4 * KiB);
      now += i === 99 ? 190 : 0.12;
      await r;
    }
    for (let i = 0; i < 2; i++) {
      const w = vol.write(8 * KiB, pattern(2, 8 * KiB));
      now += 2;
      await w;
    }
    const first = window.take();
    expect(first).toEqual({
      readOps: 100,
      writeOps: 3,
      bytesRead: 100 * 4 * KiB,
      bytesWritten: 4 * KiB + 2 * 8 * KiB,
      errors: 0,
      throttlePauses: 0,
      queueDepth: 0,
      // p50 in (0.1, 0.15]: rank 50 of 99 there; p99 = rank 99, the last of them.
      readLatencyMs: { p50: 0.125, p99: 0.15 },
      // Both in (1.5, 2]: ranks 1 and 1.98 of 2.
      writeLatencyMs: { p50: 1.75, p99: 1.995 },
    });

    // Window 2: only one slow write; the reads of window 1 are gone from it.
    const w = vol.write(0, pattern(3, 4 * KiB));
    now += 40;
    await w;
    const second = window.take();
    expect(second.readOps).toBe(100);
    expect(second.writeOps).toBe(4);
    expect(second.readLatencyMs).toEqual({ p50: 0, p99: 0 });
    // 40 ms is in (30, 50]: rank 0.5 and 0.99 of 1.
    expect(second.writeLatencyMs).toEqual({ p50: 40, p99: 49.8 });

    // Window 3: nothing happened.
    const third = window.take();
    expect(third.writeLatencyMs).toEqual({ p50: 0, p99: 0 });
    expect(third.writeOps).toBe(4);
    await vol.close();
  });

  it("reports the queue depth at the moment of the take", async () => {
    const gated = new GatedDevice(new MemoryBackend({ size: 16 * MiB }));
    const vol = await openVolume(gated, { sparse: false });
    const window = new StatsWindow(() => vol.metrics());
    const writes = [0, 1, 2].map((i) => watch(vol.write(i * MiB, pattern(i, 4 * KiB))));
    await settle();
    expect(window.take().queueDepth).toBe(3);
    await gated.releaseAll();
    await Promise.all(writes.map((w) => w.promise));
    expect(window.take().queueDepth).toBe(0);
    await vol.close();
  });

  it("counts errors and throttle pauses", async () => {
    vi.useFakeTimers();
    let throttled = 1;
    const faulty = new FaultyDevice(new MemoryBackend({ size: 16 * MiB }), (call) => {
      if (call.op === "write" && throttled > 0) {
        throttled--;
        return new StorageError("Throttled", "ServerBusy", { status: 503 });
      }
      // A plain I/O error: answered EIO, the volume keeps serving.
      if (call.op === "read") return new BlockError("EIO", "bad sector");
      return undefined;
    });
    const vol = await openVolume(faulty, { sparse: false, throttle: { pauseMs: 3000 } });
    const window = new StatsWindow(() => vol.metrics());
    const w = watch(vol.write(0, pattern(4, 4 * KiB)));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(w.settled && w.error === undefined).toBe(true);
    await expect(vol.read(0, 4 * KiB)).rejects.toThrow("bad sector");
    await expect(vol.read(4 * KiB, 4 * KiB)).rejects.toThrow("bad sector");
    const stats = window.take();
    expect(stats.throttlePauses).toBe(1);
    expect(stats.errors).toBe(2);
    expect(stats.readOps).toBe(2);
    expect(stats.writeOps).toBe(1);
    expect(vol.failure).toBeUndefined();
    await vol.close();
  });
});
