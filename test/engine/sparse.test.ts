import { describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { sparse } from "../../agent/engine/sparse.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { FaultyDevice, GatedDevice, ProbeDevice, settle, watch } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

async function loadedOver(mem: MemoryBackend, opts: Parameters<typeof sparse>[1] = {}) {
  const probe = new ProbeDevice(mem);
  const map = sparse(probe, opts);
  await map.load();
  probe.calls.length = 0;
  return { probe, map };
}

describe("sparse", () => {
  it("loads the map in sub-ranges and matches the backend's allocation", async () => {
    // 64 KiB multiples: the memory backend allocates in 64 KiB chunks.
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    await mem.write(0, pattern(1, 64 * KiB));
    await mem.write(3 * MiB - 64 * KiB, pattern(2, 192 * KiB));
    await mem.write(8 * MiB - 64 * KiB, pattern(3, 64 * KiB));
    const probe = new ProbeDevice(mem);
    const map = sparse(probe, { loadChunkBytes: 1 * MiB, loadConcurrency: 3 });
    await map.load();
    const loads = probe.of("blockStatus");
    expect(loads.length).toBeGreaterThanOrEqual(8);
    expect(loads.every((c) => c.length <= 1 * MiB)).toBe(true);
    expect(map.ranges()).toEqual([
      [0, 64 * KiB],
      [3 * MiB - 64 * KiB, 3 * MiB + 128 * KiB],
      [8 * MiB - 64 * KiB, 8 * MiB],
    ]);
    expect(map.stats.loadCalls).toBe(loads.length);
  });

  it("answers blockStatus and reads of holes without a backend request", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    await mem.write(1 * MiB, pattern(1, 64 * KiB));
    const { probe, map } = await loadedOver(mem);
    expect(await map.blockStatus(0, 2 * MiB)).toEqual([
      { offset: 0, length: 1 * MiB, hole: true, zero: true },
      { offset: 1 * MiB, length: 64 * KiB, hole: false, zero: false },
      { offset: 1 * MiB + 64 * KiB, length: 1 * MiB - 64 * KiB, hole: true, zero: true },
    ]);
    const zeros = await map.read(4 * MiB, 256 * KiB);
    expect(zeros.every((b) => b === 0)).toBe(true);
    await map.cache(4 * MiB, 1 * MiB);
    expect(probe.calls).toEqual([]);
    expect(map.stats.holeReads).toBe(1);
  });

  it("reads only the allocated part of a range that straddles holes", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    const data = pattern(2, 8 * KiB);
    const { probe, map } = await loadedOver(mem);
    await map.write(64 * KiB, data);
    probe.calls.length = 0;
    const back = Buffer.from(await map.read(32 * KiB, 128 * KiB));
    expect(probe.of("read").map((c) => [c.offset, c.length])).toEqual([[64 * KiB, 8 * KiB]]);
    expect(back.subarray(32 * KiB, 40 * KiB).equals(data)).toBe(true);
    expect(back.subarray(0, 32 * KiB).every((b) => b === 0)).toBe(true);
    expect(back.subarray(40 * KiB).every((b) => b === 0)).toBe(true);
  });

  it("fills the caller's buffer for holes and around the allocated part", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    const data = pattern(3, 4 * KiB);
    const { map } = await loadedOver(mem);
    await map.write(8 * KiB, data);
    const hole = Buffer.alloc(16 * KiB, 0xee);
    expect(await map.read(1 * MiB, 16 * KiB, hole)).toBe(hole);
    expect(hole.every((b) => b === 0)).toBe(true);
    const mixed = Buffer.alloc(16 * KiB, 0xee);
    const back = Buffer.from(await map.read(0, 16 * KiB, mixed));
    expect(back.subarray(8 * KiB, 12 * KiB).equals(data)).toBe(true);
    expect(back.subarray(0, 8 * KiB).every((b) => b === 0)).toBe(true);
    expect(back.subarray(12 * KiB).every((b) => b === 0)).toBe(true);
  });

  it("keeps the map exact at page granularity as writes, trims and zeroes complete", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    const { probe, map } = await loadedOver(mem);
    await map.write(512, pattern(3, 1536));
    await map.write(64 * KiB, pattern(4, 64 * KiB));
    expect(map.ranges()).toEqual([
      [512, 2048],
      [64 * KiB, 128 * KiB],
    ]);
    await map.trim(1024, 512);
    await map.writeZeroes(96 * KiB, 512, { noHole: true });
    expect(map.ranges()).toEqual([
      [512, 1024],
      [1536, 2048],
      [64 * KiB, 96 * KiB],
      [96 * KiB + 512, 128 * KiB],
    ]);
    expect(map.stats.allocatedBytes).toBe(512 + 512 + 32 * KiB + 32 * KiB - 512);
    // The backend was asked for every mutation, and blockStatus came from the map.
    expect(probe.calls.map((c) => c.op)).toEqual(["write", "write", "trim", "writeZeroes"]);
    const extents = await map.blockStatus(0, 4 * KiB);
    expect(extents.filter((e) => !e.hole).map((e) => [e.offset, e.length])).toEqual([
      [512, 512],
      [1536, 512],
    ]);
  });

  it("drops all-zero writes into holes and passes them on where data is", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    const { probe, map } = await loadedOver(mem);
    await map.write(0, Buffer.alloc(64 * KiB));
    expect(probe.of("write")).toHaveLength(0);
    expect(map.ranges()).toEqual([]);
    await map.write(1 * MiB, pattern(5, 4 * KiB));
    await map.write(1 * MiB, Buffer.alloc(4 * KiB));
    expect(probe.of("write")).toHaveLength(2);
    expect((await map.read(1 * MiB, 4 * KiB)).every((b) => b === 0)).toBe(true);
    expect(map.stats.skippedZeroWrites).toBe(1);
  });

  it("does not record a hole for a trim that a write to the same bytes overtook", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    const gated = new GatedDevice(mem);
    const map = sparse(gated);
    await map.load();
    const first = map.write(0, pattern(6, 8 * KiB));
    await settle();
    await gated.releaseAll();
    await first;
    const t = watch(map.trim(0, 8 * KiB));
    const w = watch(map.write(0, pattern(7, 4 * KiB)));
    await settle();
    // The backend applies the trim, then the write (the order coalesce enforces).
    await gated.held.find((g) => g.call.op === "trim")!.release();
    await gated.held.find((g) => g.call.op === "write")!.release();
    await settle();
    expect(t.settled && w.settled).toBe(true);
    expect(map.ranges()).toEqual([[0, 4 * KiB]]);
    expect(Buffer.from(await map.read(0, 4 * KiB)).equals(pattern(7, 4 * KiB))).toBe(true);
  });

  it("records no hole when the trim failed", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 8 * MiB });
    const faulty = new FaultyDevice(mem);
    const map = sparse(faulty);
    await map.load();
    await map.write(0, pattern(8, 8 * KiB));
    faulty.plan = (call) => (call.op === "trim" ? new StorageError("Invalid", "no") : undefined);
    await expect(map.trim(0, 8 * KiB)).rejects.toBeInstanceOf(StorageError);
    expect(map.ranges()).toEqual([[0, 8 * KiB]]);
  });

  it("passes everything through until loaded, then never records a stale hole", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: 4 * MiB });
    await mem.write(0, pattern(9, 64 * KiB));
    const gated = new GatedDevice(mem, ["read", "write", "trim", "close"]);
    const map = sparse(gated, { loadChunkBytes: 1 * MiB, loadConcurrency: 1 });
    const load = watch(map.load());
    await settle();
    // Before the map is known, reads go to the backend.
    expect(Buffer.from(await map.read(0, 64 * KiB)).equals(pattern(9, 64 * KiB))).toBe(true);
    expect(gated.of("read")).toHaveLength(1);
    // A write during the load marks its range even where the load saw a hole.
    await map.write(2 * MiB, pattern(10, 4 * KiB));
    while (!load.settled) {
      await settle();
      await gated.held[0]?.release();
    }
    expect(map.loaded).toBe(true);
    // The load itself may see the write (at the backend's 64 KiB granularity) or not.
    const ranges = map.ranges();
    expect(ranges[0]).toEqual([0, 64 * KiB]);
    expect(ranges[1]![0]).toBe(2 * MiB);
    expect(ranges[1]![1]).toBeGreaterThanOrEqual(2 * MiB + 4 * KiB);
    expect(ranges).toHaveLength(2);
  });
});
