import { describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { BlockError, toNbdError } from "../../agent/nbd/device.ts";

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

describe("toNbdError", () => {
  it("maps BlockError errno to wire values and anything else to EIO", () => {
    expect(toNbdError(new BlockError("ENOSPC", "x"))).toBe(28);
    expect(toNbdError(new BlockError("ENOTSUP", "x"))).toBe(95);
    expect(toNbdError(new Error("boom"))).toBe(5);
  });
});
