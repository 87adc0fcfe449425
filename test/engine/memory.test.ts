import { describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { BlockError, toNbdError } from "../../agent/nbd/device.ts";

describe("MemoryBackend", () => {
  it("reads back what was written and reports holes elsewhere", async () => {
    const dev = new MemoryBackend({ size: 1 << 20 });
    const data = Buffer.alloc(8192, 0xab);
    await dev.write(4096, data);
    expect(Buffer.from(await dev.read(4096, 8192)).equals(data)).toBe(true);
    expect(await dev.blockStatus(0, 1 << 20)).toEqual([
      { offset: 0, length: 4096, hole: true, zero: true },
      { offset: 4096, length: 8192, hole: false, zero: false },
      { offset: 12288, length: (1 << 20) - 12288, hole: true, zero: true },
    ]);
  });

  it("frees whole chunks on trim and zeroes partial ones", async () => {
    const dev = new MemoryBackend({ size: 65536 });
    await dev.write(0, Buffer.alloc(8192, 1));
    await dev.trim(0, 4096 + 512);
    expect(dev.allocatedBytes).toBe(4096);
    const back = Buffer.from(await dev.read(0, 8192));
    expect(back.subarray(0, 4608).every((b) => b === 0)).toBe(true);
    expect(back.subarray(4608).every((b) => b === 1)).toBe(true);
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
