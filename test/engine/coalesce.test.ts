import { describe, expect, it } from "vitest";
import { coalesce } from "../../agent/engine/coalesce.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { BlockError } from "../../agent/nbd/device.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { closedLoop, GatedDevice, ProbeDevice, settle, watch } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function setup(size = 64 * MiB, opts: Parameters<typeof coalesce>[1] = {}) {
  const mem = new MemoryBackend({ size });
  const gated = new GatedDevice(mem);
  const dev = coalesce(gated, opts);
  return { mem, gated, dev };
}

function spans(calls: { offset: number; length: number }[]): Array<[number, number]> {
  return calls.map((c) => [c.offset, c.length]);
}

describe("coalesce: split", () => {
  it("splits a 32 MiB write into eight 4 MiB backend writes", async () => {
    const mem = new MemoryBackend({ size: 64 * MiB });
    const probe = new ProbeDevice(mem);
    const dev = coalesce(probe);
    const data = pattern(1, 32 * MiB);
    await dev.write(4 * MiB, data);
    expect(spans(probe.of("write"))).toEqual(
      Array.from({ length: 8 }, (_, i) => [4 * MiB + i * 4 * MiB, 4 * MiB]),
    );
    expect(Buffer.from(await mem.read(4 * MiB, 32 * MiB)).equals(data)).toBe(true);
    expect(dev.blockSizes.maximum).toBe(32 * MiB);
  });

  it("resolves a split write only when every piece has landed", async () => {
    const { gated, dev } = setup();
    const w = watch(dev.write(0, pattern(2, 10 * MiB)));
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [0, 4 * MiB],
      [4 * MiB, 4 * MiB],
      [8 * MiB, 2 * MiB],
    ]);
    await gated.held[2]!.release();
    await gated.held[0]!.release();
    await settle();
    expect(w.settled).toBe(false);
    await gated.held[0]!.release();
    await settle();
    expect(w.settled).toBe(true);
    expect(w.error).toBeUndefined();
  });

  it("rejects a split write only after every piece is done with the caller's buffer", async () => {
    const { gated, dev } = setup();
    const w = watch(dev.write(0, pattern(5, 12 * MiB)));
    await settle();
    expect(gated.held).toHaveLength(3);
    const err = new StorageError("Invalid", "bad range", { status: 416 });
    gated.held[0]!.fail(err);
    await settle();
    // Two pieces are still being sent from the caller's buffer.
    expect(w.settled).toBe(false);
    await gated.releaseAll();
    await settle();
    expect(w.error).toBe(err);
  });

  it("reads the parts of a large read straight into the caller's buffer", async () => {
    const mem = new MemoryBackend({ size: 64 * MiB });
    const data = pattern(6, 9 * MiB);
    await mem.write(0, data.subarray(0, 4 * MiB));
    await mem.write(4 * MiB, data.subarray(4 * MiB, 8 * MiB));
    await mem.write(8 * MiB, data.subarray(8 * MiB));
    const dev = coalesce(mem);
    const into = Buffer.alloc(9 * MiB, 0xee);
    const back = await dev.read(0, 9 * MiB, into);
    expect(back).toBe(into);
    expect(into.equals(data)).toBe(true);
  });

  it("fetches a read larger than 4 MiB as parallel parts and joins them", async () => {
    const mem = new MemoryBackend({ size: 64 * MiB });
    const data = pattern(3, 4 * MiB);
    await mem.write(4 * MiB, data);
    await mem.write(8 * MiB, data);
    const probe = new ProbeDevice(mem);
    const dev = coalesce(probe);
    const back = Buffer.from(await dev.read(4 * MiB - 512, 8 * MiB + 1024));
    expect(probe.of("read")).toHaveLength(3);
    expect(back.subarray(512, 512 + 4 * MiB).equals(data)).toBe(true);
    expect(back.subarray(512 + 4 * MiB, 512 + 8 * MiB).equals(data)).toBe(true);
  });
});

describe("coalesce: merge", () => {
  it("merges adjacent writes queued behind a full backend into one write", async () => {
    const { gated, dev, mem } = setup(64 * MiB, { maxInFlight: 1 });
    const first = watch(dev.write(1 * MiB, pattern(4, 4 * KiB)));
    await settle();
    expect(gated.held).toHaveLength(1);
    const parts = Array.from({ length: 16 }, (_, i) => pattern(10 + i, 4 * KiB));
    const queued = parts.map((p, i) => watch(dev.write(i * 4 * KiB, p)));
    await settle();
    expect(gated.held).toHaveLength(1);
    await gated.held[0]!.release();
    await settle();
    expect(first.settled).toBe(true);
    expect(spans(gated.held.map((g) => g.call))).toEqual([[0, 64 * KiB]]);
    expect(queued.some((q) => q.settled)).toBe(false);
    await gated.held[0]!.release();
    await settle();
    expect(queued.every((q) => q.settled && q.error === undefined)).toBe(true);
    expect(Buffer.from(await mem.read(0, 64 * KiB)).equals(Buffer.concat(parts))).toBe(true);
    expect(dev.stats.writeBatches).toBe(2);
    expect(dev.stats.mergedWrites).toBe(16);
  });

  it("sends an isolated write at once, and queues one that continues the previous write", async () => {
    const { gated, dev, mem } = setup();
    const a = watch(dev.write(1 * MiB, pattern(1, 4 * KiB)));
    // Synchronously at the backend: no queue, no microtask.
    expect(spans(gated.held.map((g) => g.call))).toEqual([[1 * MiB, 4 * KiB]]);
    void dev.write(8 * MiB, pattern(2, 4 * KiB));
    expect(gated.held).toHaveLength(2);
    // A write continuing the last one goes through the queue, to merge with what follows.
    void dev.write(8 * MiB + 4 * KiB, pattern(3, 4 * KiB));
    void dev.write(8 * MiB + 8 * KiB, pattern(4, 4 * KiB));
    expect(gated.held).toHaveLength(2);
    await settle();
    await gated.releaseAll();
    await settle();
    expect(spans(gated.of("write"))).toEqual([
      [1 * MiB, 4 * KiB],
      [8 * MiB, 4 * KiB],
      [8 * MiB + 4 * KiB, 8 * KiB],
    ]);
    expect(a.settled && a.error === undefined).toBe(true);
    await gated.releaseAll();
    expect(
      Buffer.from(await mem.read(8 * MiB + 8 * KiB, 4 * KiB)).equals(pattern(4, 4 * KiB)),
    ).toBe(true);
  });

  it("does not send at once a write that overlaps or touches one in flight", async () => {
    const { gated, dev } = setup();
    void dev.write(1 * MiB, pattern(1, 4 * KiB));
    void dev.write(1 * MiB - 4 * KiB, pattern(2, 4 * KiB));
    void dev.write(1 * MiB + 2 * KiB, pattern(3, 4 * KiB));
    expect(gated.held).toHaveLength(1);
    await settle();
    await gated.releaseAll();
    await settle();
    await gated.releaseAll();
    expect(gated.of("write")).toHaveLength(3);
  });

  it("merges writes that arrive in the same tick, in any order", async () => {
    const { gated, dev } = setup(64 * MiB, { holdContiguous: false, directDispatch: false });
    const order = [3, 0, 2, 1, 5, 4, 7, 6];
    for (const i of order) void dev.write(i * 4 * KiB, pattern(i, 4 * KiB));
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([[0, 32 * KiB]]);
  });

  it("never merges past 4 MiB", async () => {
    const { gated, dev } = setup(64 * MiB, { holdContiguous: false, directDispatch: false });
    for (let i = 0; i < 20; i++) void dev.write(i * 512 * KiB, pattern(i, 512 * KiB));
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [0, 4 * MiB],
      [4 * MiB, 4 * MiB],
      [8 * MiB, 2 * MiB],
    ]);
    await gated.releaseAll();
  });

  it("holds a write that continues one in flight, and lets unrelated writes go", async () => {
    const { gated, dev } = setup();
    void dev.write(0, pattern(1, 4 * KiB));
    await settle();
    void dev.write(4 * KiB, pattern(2, 4 * KiB));
    void dev.write(8 * KiB, pattern(3, 4 * KiB));
    void dev.write(1 * MiB, pattern(4, 4 * KiB));
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [0, 4 * KiB],
      [1 * MiB, 4 * KiB],
    ]);
    await gated.held[0]!.release();
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [1 * MiB, 4 * KiB],
      [4 * KiB, 8 * KiB],
    ]);
    expect(dev.stats.holds).toBe(1);
  });

  it("lets a held run go once it has gathered holdMaxBytes", async () => {
    const { gated, dev } = setup(64 * MiB, { holdMaxBytes: 64 * KiB });
    void dev.write(0, pattern(1, 4 * KiB));
    await settle();
    // Arriving one tick at a time, as a client refilling its queue does.
    for (let i = 1; i <= 15; i++) {
      void dev.write(i * 4 * KiB, pattern(1 + i, 4 * KiB));
      await settle();
    }
    expect(spans(gated.held.map((g) => g.call))).toEqual([[0, 4 * KiB]]);
    void dev.write(16 * 4 * KiB, pattern(17, 4 * KiB));
    await settle();
    // 64 KiB gathered behind the write in flight: it goes without waiting.
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [0, 4 * KiB],
      [4 * KiB, 64 * KiB],
    ]);
    // The next arrival is held behind that one.
    void dev.write(17 * 4 * KiB, pattern(18, 4 * KiB));
    await settle();
    expect(gated.held).toHaveLength(2);
    await gated.held[1]!.release();
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [0, 4 * KiB],
      [68 * KiB, 4 * KiB],
    ]);
  });

  it("marks a merged write FUA when any member asked for FUA", async () => {
    const { gated, dev } = setup(64 * MiB, { holdContiguous: false, directDispatch: false });
    void dev.write(0, pattern(1, 4 * KiB));
    void dev.write(4 * KiB, pattern(2, 4 * KiB), { fua: true });
    void dev.write(1 * MiB, pattern(3, 4 * KiB));
    void dev.write(1 * MiB + 4 * KiB, pattern(4, 4 * KiB));
    await settle();
    expect(
      gated.held.map((g) => [g.call.offset, g.call.length, g.call.opts?.fua ?? false]),
    ).toEqual([
      [0, 8 * KiB, true],
      [1 * MiB, 8 * KiB, false],
    ]);
  });

  it("rejects every member of a merged write that failed, and only those", async () => {
    const { gated, dev } = setup(64 * MiB, { holdContiguous: false, directDispatch: false });
    const merged = [
      watch(dev.write(0, pattern(1, 4 * KiB))),
      watch(dev.write(4 * KiB, pattern(2, 4 * KiB))),
    ];
    const other = watch(dev.write(1 * MiB, pattern(3, 4 * KiB)));
    await settle();
    const failure = new StorageError("Invalid", "bad page range", { status: 416 });
    gated.held[0]!.fail(failure);
    await gated.held[0]!.release();
    await settle();
    expect(merged.map((m) => m.error)).toEqual([failure, failure]);
    expect(other.settled && other.error === undefined).toBe(true);
  });

  it("turns sequential 4 KiB writes at queue depth 32 into at least 10x fewer backend writes", async () => {
    const { gated, dev, mem } = setup(64 * MiB);
    const total = 4096;
    const expected = Buffer.alloc(total * 4 * KiB);
    await closedLoop(gated, total, 32, (i) => {
      const data = pattern(i, 4 * KiB);
      data.copy(expected, i * 4 * KiB);
      return dev.write(i * 4 * KiB, data);
    });
    const backendWrites = gated.of("write").length;
    const ratio = backendWrites / total;
    console.info(
      `merge ratio at QD32: ${backendWrites} backend writes for ${total} client writes (${ratio.toFixed(4)})`,
    );
    expect(ratio).toBeLessThanOrEqual(0.1);
    expect(Buffer.from(await mem.read(0, expected.length)).equals(expected)).toBe(true);
  });
});

describe("coalesce: ordering and flush", () => {
  it("sends an overlapping write only after the earlier one completed, so the later one wins", async () => {
    const { gated, dev, mem } = setup();
    const w1 = watch(dev.write(0, Buffer.alloc(8 * KiB, 1)));
    const w2 = watch(dev.write(4 * KiB, Buffer.alloc(8 * KiB, 2)));
    const w3 = watch(dev.write(4 * KiB, Buffer.alloc(4 * KiB, 3)));
    const w4 = watch(dev.write(12 * KiB, Buffer.alloc(4 * KiB, 4)));
    await settle();
    // w4 overlaps nothing and w1 is in flight; w2 and w3 wait.
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [0, 8 * KiB],
      [12 * KiB, 4 * KiB],
    ]);
    await gated.held[0]!.release();
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [12 * KiB, 4 * KiB],
      [4 * KiB, 8 * KiB],
    ]);
    await gated.held[1]!.release();
    await settle();
    expect(spans(gated.held.map((g) => g.call))).toEqual([
      [12 * KiB, 4 * KiB],
      [4 * KiB, 4 * KiB],
    ]);
    await gated.releaseAll();
    await settle();
    expect([w1, w2, w3, w4].every((w) => w.settled && w.error === undefined)).toBe(true);
    const back = Buffer.from(await mem.read(0, 16 * KiB));
    expect(back.subarray(0, 4 * KiB).every((b) => b === 1)).toBe(true);
    expect(back.subarray(4 * KiB, 8 * KiB).every((b) => b === 3)).toBe(true);
    expect(back.subarray(8 * KiB, 12 * KiB).every((b) => b === 2)).toBe(true);
  });

  it("merges writes that became ready together once an overlapped write completed", async () => {
    const { gated, dev } = setup();
    void dev.write(0, Buffer.alloc(8 * KiB, 1));
    void dev.write(4 * KiB, Buffer.alloc(8 * KiB, 2));
    void dev.write(0, Buffer.alloc(4 * KiB, 3));
    await settle();
    await gated.held[0]!.release();
    await settle();
    // Both waited for the first write only and do not overlap each other.
    expect(spans(gated.held.map((g) => g.call))).toEqual([[0, 12 * KiB]]);
  });

  it("orders trims and writeZeroes with the writes they overlap", async () => {
    const { gated, dev, mem } = setup();
    void dev.write(0, Buffer.alloc(8 * KiB, 1));
    const z = watch(dev.writeZeroes(0, 4 * KiB));
    void dev.write(0, Buffer.alloc(512, 5));
    await settle();
    expect(gated.held.map((g) => g.call.op)).toEqual(["write"]);
    await gated.held[0]!.release();
    await settle();
    expect(gated.held.map((g) => g.call.op)).toEqual(["writeZeroes"]);
    await gated.held[0]!.release();
    await settle();
    expect(z.settled).toBe(true);
    await gated.releaseAll();
    const back = Buffer.from(await mem.read(0, 8 * KiB));
    expect(back.subarray(0, 512).every((b) => b === 5)).toBe(true);
    expect(back.subarray(512, 4 * KiB).every((b) => b === 0)).toBe(true);
    expect(back.subarray(4 * KiB).every((b) => b === 1)).toBe(true);
  });

  it("keeps at most maxInFlight mutations at the backend", async () => {
    const { gated, dev } = setup(64 * MiB, { maxInFlight: 4 });
    for (let i = 0; i < 40; i++) void dev.write(i * 64 * KiB, pattern(i, 4 * KiB));
    await settle();
    expect(gated.held).toHaveLength(4);
    await gated.held[1]!.release();
    await settle();
    expect(gated.held).toHaveLength(4);
    expect(dev.stats.pending).toBe(39);
  });

  it("flush waits for every write queued or in flight before it, not for later ones", async () => {
    const { gated, dev } = setup(64 * MiB, { maxInFlight: 2 });
    for (let i = 0; i < 6; i++) void dev.write(i * 64 * KiB, pattern(i, 4 * KiB));
    const f = watch(dev.flush());
    void dev.write(10 * MiB, pattern(9, 4 * KiB));
    await settle();
    expect(gated.of("flush")).toHaveLength(0);
    for (let n = 0; n < 5; n++) {
      await gated.held.find((g) => g.call.offset !== 10 * MiB)!.release();
      await settle();
    }
    expect(gated.of("flush")).toHaveLength(0);
    expect(f.settled).toBe(false);
    await gated.held.find((g) => g.call.offset !== 10 * MiB)!.release();
    await settle();
    // All six earlier writes are done; the later one is still held.
    expect(gated.of("flush")).toHaveLength(1);
    expect(gated.held.map((g) => g.call.op)).toEqual(["write", "flush"]);
    await gated.held[1]!.release();
    await settle();
    expect(f.settled).toBe(true);
    expect(gated.held.map((g) => g.call.offset)).toEqual([10 * MiB]);
  });

  it("close drains queued writes, then refuses new requests with ESHUTDOWN", async () => {
    const { gated, dev, mem } = setup(64 * MiB, { maxInFlight: 1 });
    const w = [
      watch(dev.write(0, Buffer.alloc(4 * KiB, 1))),
      watch(dev.write(1 * MiB, Buffer.alloc(4 * KiB, 2))),
    ];
    const c = watch(dev.close());
    await settle();
    await expect(dev.write(0, Buffer.alloc(512))).rejects.toMatchObject({ errno: "ESHUTDOWN" });
    expect(c.settled).toBe(false);
    await gated.held[0]!.release();
    await settle();
    await gated.held[0]!.release();
    await settle();
    expect(c.settled).toBe(true);
    expect(w.every((x) => x.settled && x.error === undefined)).toBe(true);
    expect(gated.of("close")).toHaveLength(1);
    await expect(mem.read(0, 512)).rejects.toBeInstanceOf(BlockError);
  });
});
