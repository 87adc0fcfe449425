import { describe, expect, it } from "vitest";
import { allocation, Copy, intersect, type RangeLock } from "../../agent/engine/copy.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { ProbeDevice } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function memory(): MemoryBackend {
  return new MemoryBackend({ size: 16 * MiB, chunkSize: 64 * KiB });
}

/** A lock that records what was locked, and checks no two windows overlap. */
function recordingLock(): { lock: RangeLock; locked: Array<[number, number]>; held: Set<string> } {
  const locked: Array<[number, number]> = [];
  const held = new Set<string>();
  const lock: RangeLock = async (start, end) => {
    locked.push([start, end]);
    held.add(`${start}`);
    return () => held.delete(`${start}`);
  };
  return { lock, locked, held };
}

describe("Copy", () => {
  it("copies ranges in locked windows of chunkBytes, clearing holes of the source", async () => {
    const source = memory();
    const target = new ProbeDevice(memory());
    await source.write(0, pattern(1, 3 * MiB));
    await target.write(3 * MiB, pattern(2, 1 * MiB)); // stale, a hole on the source
    const { lock, locked, held } = recordingLock();
    const copy = new Copy({
      source,
      target,
      ranges: [{ offset: 0, length: 4 * MiB }],
      clearHoles: true,
      lock,
      chunkBytes: 1 * MiB,
      concurrency: 2,
    });
    expect(copy.totalBytes).toBe(4 * MiB);
    await copy.run();
    expect(locked.map(([s, e]) => e - s)).toEqual([MiB, MiB, MiB, MiB]);
    expect(held.size).toBe(0);
    expect(copy.copiedBytes).toBe(4 * MiB);
    expect(copy.percent).toBe(100);
    expect(copy.dataBytes).toBe(3 * MiB);
    expect(copy.clearedBytes).toBe(1 * MiB);
    expect(target.of("write").every((c) => c.length <= MiB)).toBe(true);
    expect(Buffer.from(await target.read(0, 4 * MiB)).equals(Buffer.from(await source.read(0, 4 * MiB)))).toBe(true);
  });

  it("leaves holes alone on a new blob and stops when its signal aborts", async () => {
    const source = memory();
    await source.write(0, pattern(1, 2 * MiB));
    const { allocated, holes } = await allocation(source, source.size);
    expect(allocated).toEqual([{ offset: 0, length: 2 * MiB }]);
    expect(holes).toEqual([{ offset: 2 * MiB, length: 14 * MiB }]);
    const target = new ProbeDevice(memory());
    const { lock } = recordingLock();
    await new Copy({ source, target, ranges: [{ offset: 0, length: 4 * MiB }], clearHoles: false, lock }).run();
    expect(target.of("writeZeroes")).toEqual([]);
    const controller = new AbortController();
    controller.abort(new Error("target offline"));
    const stopped = new Copy({ source, target, ranges: allocated, clearHoles: false, lock, signal: controller.signal });
    await expect(stopped.run()).rejects.toThrow("target offline");
    expect(stopped.copiedBytes).toBe(0);
  });
});

describe("intersect", () => {
  const r = (offset: number, length: number) => ({ offset, length });
  it("keeps only where both lists cover, across partial and nested overlaps", () => {
    expect(intersect([r(0, 10), r(20, 10), r(40, 5)], [r(5, 20), r(28, 30)])).toEqual([r(5, 5), r(20, 5), r(28, 2), r(40, 5)]);
    expect(intersect([r(0, 100)], [r(10, 1), r(50, 2)])).toEqual([r(10, 1), r(50, 2)]);
  });
  it("is empty when either side is, or they only touch", () => {
    expect(intersect([], [r(0, 10)])).toEqual([]);
    expect(intersect([r(0, 10)], [])).toEqual([]);
    expect(intersect([r(0, 10)], [r(10, 10)])).toEqual([]);
  });
});
