import { describe, expect, it } from "vitest";
import { align } from "../../agent/engine/align.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { pattern, prng } from "../conformance/block-device-suite.ts";
import { GatedDevice, ProbeDevice, settle, watch } from "./fixtures.ts";

const SIZE = 1024 * 1024;

async function filled(seed: number): Promise<{ mem: MemoryBackend; model: Buffer }> {
  const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: SIZE });
  const model = pattern(seed, 64 * 1024);
  await mem.write(0, model);
  return { mem, model };
}

function aligned(probe: ProbeDevice): boolean {
  return probe.calls.every((c) => c.offset % 512 === 0 && c.length % 512 === 0);
}

describe("align", () => {
  it("writes an unaligned range as one read-modify-write of the covering sectors", async () => {
    const { mem, model } = await filled(1);
    const probe = new ProbeDevice(mem);
    const dev = align(probe);
    const data = pattern(2, 1000);
    await dev.write(100, data);
    data.copy(model, 100);
    expect(Buffer.from(await mem.read(0, model.length)).equals(model)).toBe(true);
    const writes = probe.of("write");
    expect(writes.map((c) => [c.offset, c.length])).toEqual([[0, 1536]]);
    expect(aligned(probe)).toBe(true);
  });

  it("reads only the partial edge sectors, not the whole covered range", async () => {
    const { mem, model } = await filled(3);
    const probe = new ProbeDevice(mem);
    const dev = align(probe);
    const data = pattern(4, 20_000);
    await dev.write(300, data);
    data.copy(model, 300);
    expect(probe.of("read").map((c) => [c.offset, c.length])).toEqual([
      [0, 512],
      [19_968, 512],
    ]);
    expect(Buffer.from(await mem.read(0, model.length)).equals(model)).toBe(true);
  });

  it("returns exactly the bytes asked for from an aligned backend read", async () => {
    const { mem, model } = await filled(5);
    const probe = new ProbeDevice(mem);
    const dev = align(probe);
    const back = await dev.read(777, 3333);
    expect(Buffer.from(back).equals(model.subarray(777, 777 + 3333))).toBe(true);
    expect(probe.of("read").map((c) => [c.offset, c.length])).toEqual([[512, 4096]]);
  });

  it("passes aligned requests through untouched", async () => {
    const { mem } = await filled(6);
    const probe = new ProbeDevice(mem);
    const dev = align(probe);
    const data = pattern(7, 4096);
    await dev.write(8192, data);
    await dev.read(8192, 4096);
    expect(probe.calls.map((c) => [c.op, c.offset, c.length])).toEqual([
      ["write", 8192, 4096],
      ["read", 8192, 4096],
    ]);
    expect(probe.calls[0]!.data).toBe(data);
  });

  it("serialises two concurrent writes sharing a sector so neither loses bytes", async () => {
    const { mem, model } = await filled(8);
    const gated = new GatedDevice(mem);
    const dev = align(gated);
    const a = pattern(9, 100);
    const b = pattern(10, 100);
    const wa = watch(dev.write(0, a));
    const wb = watch(dev.write(100, b));
    await settle();
    // Only the first read-modify-write has got as far as its write; the
    // second has not even read the sector (it would read stale bytes).
    expect(gated.held.map((g) => [g.call.op, g.call.offset])).toEqual([["write", 0]]);
    expect(gated.of("read")).toHaveLength(1);
    await gated.held[0]!.release();
    await settle();
    expect(wa.settled).toBe(true);
    expect(gated.of("read")).toHaveLength(2);
    expect(gated.held.map((g) => [g.call.op, g.call.offset])).toEqual([["write", 0]]);
    await gated.held[0]!.release();
    await settle();
    expect(wb.settled).toBe(true);
    a.copy(model, 0);
    b.copy(model, 100);
    expect(Buffer.from(await mem.read(0, 512)).equals(model.subarray(0, 512))).toBe(true);
  });

  it("keeps every byte of many concurrent unaligned writes across shared sectors, released in random order", async () => {
    const { mem, model } = await filled(11);
    const gated = new GatedDevice(mem);
    const dev = align(gated);
    const rand = prng(12);
    // Disjoint byte ranges that share sectors in every way: inside one
    // sector, straddling two, covering whole sectors between partial edges.
    const writes: Array<[number, Buffer]> = [];
    let pos = 5;
    for (let i = 0; i < 60; i++) {
      const length = 1 + Math.floor(rand() * (i % 5 === 0 ? 1500 : 300));
      writes.push([pos, pattern(100 + i, length)]);
      pos += length + Math.floor(rand() * 3);
    }
    const done = writes.map(([offset, data]) => watch(dev.write(offset, data)));
    while (done.some((d) => !d.settled)) {
      await settle();
      if (gated.held.length === 0) continue;
      await gated.held[Math.floor(rand() * gated.held.length)]!.release();
    }
    for (const [offset, data] of writes) data.copy(model, offset);
    expect(done.every((d) => d.error === undefined)).toBe(true);
    expect(Buffer.from(await mem.read(0, model.length)).equals(model)).toBe(true);
    expect(aligned(gated)).toBe(true);
  });

  it("shrinks an unaligned trim to the whole sectors inside it", async () => {
    const { mem } = await filled(13);
    const probe = new ProbeDevice(mem);
    const dev = align(probe);
    await dev.trim(100, 2000);
    await dev.trim(600, 300);
    expect(probe.of("trim").map((c) => [c.offset, c.length])).toEqual([[512, 1536]]);
  });

  it("zeroes whole sectors with writeZeroes and the partial edges by read-modify-write", async () => {
    const { mem, model } = await filled(14);
    const probe = new ProbeDevice(mem);
    const dev = align(probe);
    await dev.writeZeroes(100, 2000, { fua: true });
    model.fill(0, 100, 2100);
    expect(Buffer.from(await mem.read(0, model.length)).equals(model)).toBe(true);
    expect(probe.of("writeZeroes").map((c) => [c.offset, c.length, c.opts?.fua])).toEqual([
      [512, 1536, true],
    ]);
    expect(
      probe
        .of("write")
        .map((c): [number, number, boolean | undefined] => [c.offset, c.length, c.opts?.fua])
        .sort((x, y) => x[0] - y[0]),
    ).toEqual([
      [0, 512, true],
      [2048, 512, true],
    ]);
    await dev.writeZeroes(3000, 10);
    model.fill(0, 3000, 3010);
    expect(Buffer.from(await mem.read(0, model.length)).equals(model)).toBe(true);
  });

  it("clips blockStatus of an unaligned range to exactly that range", async () => {
    const mem = new MemoryBackend({ chunkSize: 64 * 1024, size: SIZE });
    const chunk = 64 * 1024; // the memory backend's allocation unit
    await mem.write(chunk, Buffer.alloc(chunk, 1));
    const probe = new ProbeDevice(mem);
    const dev = align(probe);
    const extents = await dev.blockStatus(chunk - 192, 192 + chunk + 712);
    expect(extents).toEqual([
      { offset: chunk - 192, length: 192, hole: true, zero: true },
      { offset: chunk, length: chunk, hole: false, zero: false },
      { offset: 2 * chunk, length: 712, hole: true, zero: true },
    ]);
    expect(probe.calls.map((c) => [c.offset, c.length])).toEqual([[chunk - 512, 67_072]]);
  });
});
