import { describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { BufferPool } from "../../agent/nbd/buffer-pool.ts";
import { BlockError, toNbdError } from "../../agent/nbd/device.ts";
import { PooledDonation } from "../../agent/nbd/donation.ts";

describe("MemoryBackend", () => {
  it("reads back what was written and reports holes elsewhere", async () => {
    const dev = new MemoryBackend({ size: 1 << 20, chunkSize: 65536 });
    const data = Buffer.alloc(8192, 0xab);
    await dev.write(65536 + 4096, data);
    expect(Buffer.from(await dev.read(65536 + 4096, 8192)).equals(data)).toBe(true);
    // Allocation is tracked per 64 KiB chunk.
    expect(await dev.blockStatus(0, 1 << 20)).toEqual([
      { offset: 0, length: 65536, hole: true, zero: true },
      { offset: 65536, length: 65536, hole: false, zero: false },
      { offset: 131072, length: (1 << 20) - 131072, hole: true, zero: true },
    ]);
    // A read into a dirty caller buffer still returns zeros for holes.
    const into = Buffer.alloc(4096, 0xff);
    const back = Buffer.from(await dev.read(0, 4096, into));
    expect(back.every((b) => b === 0)).toBe(true);
  });

  it("frees whole chunks on trim and zeroes partial ones", async () => {
    const dev = new MemoryBackend({ size: 4 * 65536, chunkSize: 65536 });
    await dev.write(0, Buffer.alloc(2 * 65536, 1));
    await dev.trim(0, 65536 + 512);
    expect(dev.allocatedBytes).toBe(65536);
    const back = Buffer.from(await dev.read(0, 2 * 65536));
    expect(back.subarray(0, 65536 + 512).every((b) => b === 0)).toBe(true);
    expect(back.subarray(65536 + 512).every((b) => b === 1)).toBe(true);
    // Zeroing the rest of a chunk frees it.
    await dev.writeZeroes(65536 + 512, 65536 - 512);
    expect(dev.allocatedBytes).toBe(0);
  });

  it("lends large reads as views of a chunk, which no later write, zeroing or trim changes", async () => {
    const MiB = 1 << 20;
    const dev = new MemoryBackend({ size: 4 * MiB });
    await dev.write(0, Buffer.alloc(MiB, 1));
    const view = await dev.read(0, MiB);
    const part = await dev.read(MiB / 2, MiB / 4);
    await dev.write(0, Buffer.alloc(4096, 2)); // partial write to the lent chunk
    const second = await dev.read(0, MiB);
    await dev.write(0, Buffer.alloc(MiB, 3)); // whole-chunk write to a lent chunk
    const third = await dev.read(0, MiB);
    await dev.writeZeroes(0, 4096);
    await dev.trim(0, MiB);
    expect(Buffer.from(view).every((b) => b === 1)).toBe(true);
    expect(Buffer.from(part).every((b) => b === 1)).toBe(true);
    expect(Buffer.from(second.subarray(0, 4096)).every((b) => b === 2)).toBe(true);
    expect(Buffer.from(second.subarray(4096)).every((b) => b === 1)).toBe(true);
    expect(Buffer.from(third).every((b) => b === 3)).toBe(true);
    expect(Buffer.from(await dev.read(0, MiB)).every((b) => b === 0)).toBe(true);
    expect(dev.allocatedBytes).toBe(0);
  });

  it("copies small reads and reads across chunks into the caller's buffer", async () => {
    const dev = new MemoryBackend({ size: 4 * 65536, chunkSize: 65536 });
    await dev.write(0, Buffer.alloc(2 * 65536, 7));
    const into = Buffer.alloc(2 * 65536);
    const across = await dev.read(0, 2 * 65536, into);
    expect(across.buffer).toBe(into.buffer);
    const small = await dev.read(0, 4096);
    await dev.write(0, Buffer.alloc(65536, 8));
    expect(Buffer.from(across).every((b) => b === 7)).toBe(true);
    expect(Buffer.from(small).every((b) => b === 7)).toBe(true);
  });

  it("refuses a chunk size that is not a power of two of at least 4 KiB", () => {
    for (const chunkSize of [0, 512, 3 * 4096, 65535]) {
      expect(() => new MemoryBackend({ size: 65536, chunkSize })).toThrow(RangeError);
    }
  });

  it("rejects unaligned, out-of-range and read-only requests with errno", async () => {
    const dev = new MemoryBackend({ size: 4096 });
    await expect(dev.read(1, 512)).rejects.toMatchObject({ errno: "EINVAL" });
    await expect(dev.read(4096, 512)).rejects.toMatchObject({ errno: "ENOSPC" });
    const ro = new MemoryBackend({ size: 4096, readOnly: true });
    await expect(ro.write(0, Buffer.alloc(512))).rejects.toMatchObject({ errno: "EPERM" });
  });
});

describe("MemoryBackend with donated payloads", () => {
  const CHUNK = 64 * 1024;
  /** A pooled buffer filled with `fill`, and its donation. */
  function donated(pool: BufferPool, fill: number): { buf: Buffer; d: PooledDonation } {
    const buf = pool.acquire(CHUNK).fill(fill);
    return { buf, d: new PooledDonation(pool, buf) };
  }

  it("adopts a whole-chunk payload and gives back the chunk it replaced", async () => {
    const dev = new MemoryBackend({ size: 4 * CHUNK, chunkSize: CHUNK });
    const pool = new BufferPool();
    await dev.write(CHUNK, Buffer.alloc(CHUNK, 1)); // copied: no donation
    const { buf, d } = donated(pool, 2);
    await dev.write(CHUNK, buf, { donation: d });
    expect(d.taken).toBe(true);
    d.settle();
    // The replaced chunk went to the pool; the payload is the chunk now.
    expect(pool.pooledBytes).toBe(CHUNK);
    const view = await dev.read(CHUNK, CHUNK);
    expect(view.buffer).toBe(buf.buffer);
    expect(Buffer.from(view).every((b) => b === 2)).toBe(true);
    // Adopting into a hole replaces nothing.
    const hole = donated(pool, 3);
    await dev.write(3 * CHUNK, hole.buf, { donation: hole.d });
    hole.d.settle();
    expect(hole.d.taken).toBe(true);
    expect(pool.pooledBytes).toBe(0);
    expect(dev.allocatedBytes).toBe(2 * CHUNK);
  });

  it("copies what it may not adopt: part of a chunk, across chunks, or bytes not donated", async () => {
    const dev = new MemoryBackend({ size: 8 * CHUNK, chunkSize: CHUNK });
    const pool = new BufferPool();
    const unaligned = donated(pool, 4);
    await dev.write(CHUNK / 2, unaligned.buf, { donation: unaligned.d });
    const twoChunks = pool.acquire(2 * CHUNK).fill(5);
    const across = new PooledDonation(pool, twoChunks);
    await dev.write(2 * CHUNK, twoChunks, { donation: across });
    const other = donated(pool, 6);
    await dev.write(4 * CHUNK, Buffer.from(other.buf), { donation: other.d });
    for (const x of [unaligned.d, across, other.d]) {
      expect(x.taken).toBe(false);
      x.settle();
    }
    // The donors got their buffers back and scribble on them: the device copied.
    unaligned.buf.fill(0xee);
    twoChunks.fill(0xee);
    other.buf.fill(0xee);
    const back = Buffer.from(await dev.read(0, 8 * CHUNK));
    expect(back.subarray(CHUNK / 2, CHUNK / 2 + CHUNK).every((b) => b === 4)).toBe(true);
    expect(back.subarray(2 * CHUNK, 4 * CHUNK).every((b) => b === 5)).toBe(true);
    expect(back.subarray(4 * CHUNK, 5 * CHUNK).every((b) => b === 6)).toBe(true);
  });

  it("never changes a lent view, nor an adopted buffer while its donation is open", async () => {
    const dev = new MemoryBackend({ size: 2 * CHUNK, chunkSize: CHUNK });
    const pool = new BufferPool();
    await dev.write(0, Buffer.alloc(CHUNK, 1));
    const lent = await dev.read(0, CHUNK);
    const first = donated(pool, 2);
    await dev.write(0, first.buf, { donation: first.d });
    // The lent chunk was replaced but not recycled: the view keeps its bytes.
    expect(pool.pooledBytes).toBe(0);
    expect(Buffer.from(lent).every((b) => b === 1)).toBe(true);
    // `first` is still open (a sibling replica may be reading the payload),
    // so replacing it does not recycle it either...
    const second = donated(pool, 3);
    await dev.write(0, second.buf, { donation: second.d });
    expect(pool.pooledBytes).toBe(0);
    expect(first.buf.every((b) => b === 2)).toBe(true);
    // ...and changes to the open `second` go to a copy.
    await dev.write(0, Buffer.alloc(4096, 4));
    await dev.writeZeroes(8192, 4096);
    expect(second.buf.every((b) => b === 3)).toBe(true);
    first.d.settle();
    second.d.settle();
    const back = Buffer.from(await dev.read(0, CHUNK));
    expect(back.subarray(0, 4096).every((b) => b === 4)).toBe(true);
    expect(back.subarray(4096, 8192).every((b) => b === 3)).toBe(true);
    expect(back.subarray(8192, 12288).every((b) => b === 0)).toBe(true);
    expect(back.subarray(12288).every((b) => b === 3)).toBe(true);
    // Once settled, nothing pins: the chunk a new payload replaces is recycled.
    await dev.write(CHUNK, Buffer.alloc(CHUNK, 5));
    const third = donated(pool, 6);
    await dev.write(CHUNK, third.buf, { donation: third.d });
    third.d.settle();
    expect(pool.pooledBytes).toBe(CHUNK);
  });

  it("gives one donation to one of two devices; the other copies", async () => {
    const pool = new BufferPool();
    const replicas = [0, 1].map(() => new MemoryBackend({ size: CHUNK, chunkSize: CHUNK }));
    const { buf, d } = donated(pool, 7);
    await Promise.all(replicas.map((r) => r.write(0, buf, { donation: d })));
    d.settle();
    // The taker owns the buffer and may change it later; the other must not see that.
    await replicas[0]!.write(0, Buffer.alloc(4096, 8));
    expect(buf.subarray(0, 4096).every((b) => b === 8)).toBe(true);
    const other = Buffer.from(await replicas[1]!.read(0, CHUNK));
    expect(other.every((b) => b === 7)).toBe(true);
  });
});

describe("toNbdError", () => {
  it("maps BlockError errno to wire values and anything else to EIO", () => {
    expect(toNbdError(new BlockError("ENOSPC", "x"))).toBe(28);
    expect(toNbdError(new BlockError("ENOTSUP", "x"))).toBe(95);
    expect(toNbdError(new Error("boom"))).toBe(5);
  });
});
