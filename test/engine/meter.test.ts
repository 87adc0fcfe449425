import { createHook } from "node:async_hooks";
import { describe, expect, it } from "vitest";
import { FailureLatch, failure } from "../../agent/engine/failure.ts";
import { ClientLatency, LATENCY_BOUNDS_MS } from "../../agent/engine/latency.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { ioCounts, meter } from "../../agent/engine/meter.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import { BlockError, type BlockDevice } from "../../agent/nbd/device.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { FaultyDevice, GatedDevice, settle, watch } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const bucketOf = (ms: number): number => LATENCY_BOUNDS_MS.indexOf(ms);

describe("meter", () => {
  it("counts requests and bytes by kind, untimed", async () => {
    const counts = ioCounts();
    const dev = meter(new MemoryBackend({ size: 1 * MiB }), counts);
    await dev.write(0, pattern(1, 8 * KiB));
    await dev.read(0, 4 * KiB);
    await dev.trim(0, 4 * KiB);
    await dev.writeZeroes(4 * KiB, 512);
    await dev.flush();
    await dev.blockStatus(0, 1 * MiB);
    await dev.cache(0, 4 * KiB);
    expect(counts).toEqual({
      reads: 1,
      writes: 1,
      flushes: 1,
      trims: 1,
      zeroes: 1,
      blockStatus: 1,
      caches: 1,
      bytesRead: 4 * KiB,
      bytesWritten: 8 * KiB,
      bytesTrimmed: 4 * KiB,
      bytesZeroed: 512,
    });
  });
});

/** The guard at the top of a volume, timing what it lets in. */
function timedGuard(next: BlockDevice, latency: ClientLatency) {
  return failure(next, { latch: new FailureLatch(), latency });
}

describe("client latency, timed by the failure guard", () => {
  it("times every kind from call to completion and counts what is in flight", async () => {
    let now = 0;
    const latency = new ClientLatency(() => now);
    const gated = new GatedDevice(new MemoryBackend({ size: 1 * MiB }), ["close"]);
    const dev = timedGuard(gated, latency);
    const pending = [
      watch(dev.read(0, 4 * KiB)),
      watch(dev.write(0, pattern(2, 4 * KiB))),
      watch(dev.flush()),
      watch(dev.trim(0, 512)),
      watch(dev.writeZeroes(512, 512)),
      watch(dev.blockStatus(0, 4 * KiB)),
      watch(dev.cache(0, 4 * KiB)),
    ];
    expect(latency.inFlight).toBe(7);
    now = 0.3;
    // Release one at a time, each 0.3 ms later than the one before.
    while (gated.held.length > 0) {
      await gated.held[0]!.release();
      await settle();
      now += 0.3;
    }
    expect(pending.every((p) => p.settled && p.error === undefined)).toBe(true);
    expect(latency.inFlight).toBe(0);
    const s = latency.snapshot();
    // read 0.3 ms, write 0.6, flush 0.9, trim 1.2, zero 1.5.
    expect(s.read.counts[bucketOf(0.3)]).toBe(1);
    expect(s.write.counts[bucketOf(0.75)]).toBe(1);
    expect(s.flush.counts[bucketOf(1)]).toBe(1);
    expect(s.trim.counts[bucketOf(1.5)]).toBe(1);
    expect(s.zero.counts[bucketOf(1.5)]).toBe(1);
    for (const kind of ["read", "write", "flush", "trim", "zero"] as const) {
      expect(s[kind].count).toBe(1);
    }
  });

  it("a failed request completes its timing and passes its error up", async () => {
    let now = 0;
    const latency = new ClientLatency(() => now);
    const faulty = new FaultyDevice(new MemoryBackend({ size: 1 * MiB }), (call) =>
      call.op === "write" ? new BlockError("EIO", "disk on fire") : undefined,
    );
    const dev = timedGuard(faulty, latency);
    const w = dev.write(0, pattern(3, 4 * KiB));
    now = 5;
    await expect(w).rejects.toThrow("disk on fire");
    expect(latency.inFlight).toBe(0);
    expect(latency.snapshot().write.counts[bucketOf(5)]).toBe(1);
  });

  it("a synchronous throw from below is answered as it was, and leaves nothing in flight", () => {
    const latency = new ClientLatency(() => 0);
    const broken = new MemoryBackend({ size: 1 * MiB }) as BlockDevice;
    broken.read = () => {
      throw new BlockError("EINVAL", "thrown, not rejected");
    };
    const dev = timedGuard(broken, latency);
    expect(() => dev.read(0, 512)).toThrow("thrown, not rejected");
    expect(latency.inFlight).toBe(0);
    expect(latency.snapshot().read.count).toBe(1);
  });

  it("a request refused at the gate is neither timed nor in flight", async () => {
    const latency = new ClientLatency(() => 0);
    const dev = timedGuard(new MemoryBackend({ size: 1 * MiB }), latency);
    await dev.close();
    await expect(dev.read(0, 512)).rejects.toMatchObject({ errno: "ESHUTDOWN" });
    expect(latency.inFlight).toBe(0);
    expect(latency.snapshot().read.count).toBe(0);
  });

  it("costs no promise per request: the guard makes as many timed as untimed", async () => {
    const promisesPerRequest = async (dev: BlockDevice): Promise<number> => {
      await dev.read(0, 4 * KiB); // warm up: first calls may allocate lazily
      let made = 0;
      const hook = createHook({
        init: (_id, type) => {
          if (type === "PROMISE") made++;
        },
      }).enable();
      try {
        for (let i = 0; i < 10; i++) {
          await dev.read(0, 4 * KiB);
          await dev.write(0, pattern(i, 4 * KiB));
        }
      } finally {
        hook.disable();
      }
      return made;
    };
    const plain = failure(new MemoryBackend({ size: 1 * MiB }), { latch: new FailureLatch() });
    const latency = new ClientLatency();
    const timed = timedGuard(new MemoryBackend({ size: 1 * MiB }), latency);
    const untimedCount = await promisesPerRequest(plain);
    expect(untimedCount).toBeGreaterThan(0);
    expect(await promisesPerRequest(timed)).toBe(untimedCount);
    expect(latency.snapshot().read.count).toBe(11);
    expect(latency.snapshot().write.count).toBe(10);
  });
});

describe("Volume.metrics()", () => {
  it("carries the client latency and the queue depth of the whole stack", async () => {
    let now = 0;
    const gated = new GatedDevice(new MemoryBackend({ size: 16 * MiB }), [
      "read",
      "blockStatus",
      "close",
    ]);
    const vol = await openVolume(gated, { latencyClock: () => now, sparse: false });
    const writes = Array.from({ length: 4 }, (_, i) =>
      watch(vol.write(i * 64 * KiB, pattern(i, 4 * KiB))),
    );
    await settle();
    expect(vol.metrics().queueDepth).toBe(4);
    now = 3;
    await gated.releaseAll();
    await Promise.all(writes.map((w) => w.promise));
    await vol.read(0, 4 * KiB);
    const m = vol.metrics();
    expect(m.queueDepth).toBe(0);
    expect(m.latency.write.count).toBe(4);
    expect(m.latency.write.counts[bucketOf(3)]).toBe(4);
    expect(m.latency.read.count).toBe(1);
    expect(m.latency.read.counts[0]).toBe(1); // 0 ms: the clock did not move
    await vol.close();
  });
});
