import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import type { ThrottleEvent } from "../../agent/engine/throttle.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { closedLoop, FaultyDevice, GatedDevice, ProbeDevice, settle, watch } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("openVolume", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("loads the map in sub-ranges, then answers blockStatus and hole reads without the backend", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 64 * MiB });
    await mem.write(10 * MiB, pattern(1, 64 * KiB));
    const probe = new ProbeDevice(mem);
    const vol = await openVolume(probe, { sparse: { loadChunkBytes: 16 * MiB } });
    expect(probe.of("blockStatus").length).toBeGreaterThanOrEqual(4);
    probe.calls.length = 0;
    const extents = await vol.blockStatus(0, 64 * MiB);
    expect(extents.filter((e) => !e.hole).map((e) => [e.offset, e.length])).toEqual([
      [10 * MiB, 64 * KiB],
    ]);
    expect((await vol.read(20 * MiB, 1 * MiB)).every((b) => b === 0)).toBe(true);
    expect((await vol.read(20 * MiB + 3, 1000)).every((b) => b === 0)).toBe(true);
    expect(probe.calls).toEqual([]);
    const m = vol.metrics();
    expect(m.client.reads).toBe(2);
    expect(m.backend.reads).toBe(0);
    expect(m.sparse?.holeReads).toBe(2);
  });

  it("splits a 32 MiB write into eight Put Page sized backend writes", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 64 * MiB });
    const probe = new ProbeDevice(mem);
    const vol = await openVolume(probe);
    const data = pattern(2, 32 * MiB);
    await vol.write(8 * MiB, data);
    expect(probe.of("write").map((c) => c.length)).toEqual(Array(8).fill(4 * MiB));
    expect(Buffer.from(await vol.read(8 * MiB, 32 * MiB)).equals(data)).toBe(true);
    const m = vol.metrics();
    expect(m.client.writes).toBe(1);
    expect(m.backend.writes).toBe(8);
    expect(m.backend.bytesWritten).toBe(32 * MiB);
  });

  it("serves unaligned I/O with whole sectors at the backend", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 16 * MiB });
    const probe = new ProbeDevice(mem);
    const vol = await openVolume(probe);
    const data = pattern(3, 10_000);
    await vol.write(1234, data);
    expect(Buffer.from(await vol.read(1234, 10_000)).equals(data)).toBe(true);
    expect(probe.calls.every((c) => c.offset % 512 === 0 && c.length % 512 === 0)).toBe(true);
    expect(vol.metrics().readModifyWrites).toBe(1);
  });

  it("merges sequential 4 KiB writes at queue depth 32 through the whole stack", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 64 * MiB });
    const gated = new GatedDevice(mem);
    const opening = watch(openVolume(gated));
    while (!opening.settled) {
      await settle();
      await gated.releaseAll();
    }
    const vol = await opening.promise;
    const total = 2048;
    await closedLoop(gated, total, 32, (i) => vol.write(i * 4 * KiB, pattern(i, 4 * KiB)));
    const m = vol.metrics();
    const ratio = m.backend.writes / m.client.writes;
    console.info(
      `stack merge ratio at QD32: ${m.backend.writes}/${m.client.writes} = ${ratio.toFixed(4)}`,
    );
    expect(m.client.writes).toBe(total);
    expect(ratio).toBeLessThanOrEqual(0.1);
    expect(Buffer.from(await vol.read(100 * 4 * KiB, 4 * KiB)).equals(pattern(100, 4 * KiB))).toBe(
      true,
    );
  });

  it("reports throttle pauses through onEvent and in the metrics, and the write lands", async () => {
    vi.useFakeTimers();
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 16 * MiB });
    let busy = 2;
    const faulty = new FaultyDevice(mem, (call) => {
      if (call.op === "write" && busy > 0) {
        busy--;
        return new StorageError("Throttled", "ServerBusy", { status: 503 });
      }
      return undefined;
    });
    const events: ThrottleEvent[] = [];
    const vol = await openVolume(faulty, {
      onEvent: (e) => events.push(e),
      throttle: { pauseMs: 3000 },
    });
    const data = pattern(4, 64 * KiB);
    const w = watch(vol.write(0, data));
    await vi.advanceTimersByTimeAsync(30_000);
    expect(w.settled && w.error === undefined).toBe(true);
    const pauses = events.filter((e) => e.type === "throttle-pause");
    expect(pauses).toHaveLength(2);
    expect(pauses.every((e) => e.durationMs >= 3000)).toBe(true);
    const m = vol.metrics();
    expect(m.throttle.pauses).toBe(2);
    expect(m.backend.writes).toBe(3);
    expect(m.failed).toBe(false);
    expect(Buffer.from(await vol.read(0, data.length)).equals(data)).toBe(true);
  });

  it("advertises 512/4096/32 MiB block sizes over a Put Page limited backend", async () => {
    const vol = await openVolume(new MemoryBackend({ chunkSize: 64 * 1024, size: 16 * MiB }));
    expect(vol.blockSizes).toEqual({ minimum: 512, preferred: 4096, maximum: 32 * MiB });
    expect(vol.size).toBe(16 * MiB);
    expect(vol.canMultiConn).toBe(true);
  });
});
