import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PageBlobBackend } from "../../agent/engine/pageblob-backend.ts";
import { BlockError } from "../../agent/nbd/device.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import type { FaultProxy } from "../harness/fault-proxy.ts";
import { pattern, type ProxiedFixture, setupProxiedFixture } from "./fixture.ts";

let fx: ProxiedFixture;
let proxy: FaultProxy;
beforeAll(async () => {
  fx = await setupProxiedFixture();
  ({ proxy } = fx);
});
afterAll(() => fx?.close());

async function device(
  size: number,
  opts: { leaseId?: string; readOnly?: boolean; statusLimit?: number } = {},
) {
  const name = fx.name();
  const setup = fx.open(name);
  await setup.create(size);
  const leaseId = opts.leaseId === "take" ? await setup.acquireLease(-1) : opts.leaseId;
  const dev = await PageBlobBackend.open(fx.open(name, { endpoint: proxy.blobEndpoint }), {
    ...opts,
    leaseId,
  });
  return { dev, name, leaseId };
}

describe("PageBlobBackend on Azurite", () => {
  it("learns its size on open and advertises page blob block sizes", async () => {
    const { dev } = await device(3 << 20);
    expect(dev.size).toBe(3 << 20);
    expect(dev.blockSizes).toEqual({ minimum: 512, preferred: 4096, maximum: 4 << 20 });
    expect(dev.canMultiConn).toBe(true);
    await dev.close();
  });

  it("writes with the lease id, reads back, and reports holes and data from page ranges", async () => {
    const { dev } = await device(1 << 20, { leaseId: "take" });
    await dev.write(65536, pattern(8192, 1));
    expect(Buffer.from(await dev.read(65536, 8192)).equals(pattern(8192, 1))).toBe(true);
    // A lent buffer of the exact length is filled in place.
    const into = new Uint8Array(8192);
    const got = await dev.read(65536, 8192, into);
    expect(got.buffer).toBe(into.buffer);
    expect(Buffer.from(into).equals(pattern(8192, 1))).toBe(true);
    expect(await dev.blockStatus(0, 1 << 20)).toEqual([
      { offset: 0, length: 65536, hole: true, zero: true },
      { offset: 65536, length: 8192, hole: false, zero: false },
      { offset: 73728, length: (1 << 20) - 73728, hole: true, zero: true },
    ]);
    await dev.flush();
    await dev.close();
  });

  it("trim and writeZeroes clear pages; NO_HOLE zeroes stay allocated", async () => {
    const { dev } = await device(1 << 20, { leaseId: "take" });
    await dev.write(0, pattern(65536, 2));
    await dev.trim(0, 8192);
    await dev.writeZeroes(16384, 8192);
    await dev.writeZeroes(32768, 8192, { noHole: true });
    const back = Buffer.from(await dev.read(0, 65536));
    const expected = pattern(65536, 2);
    expected.fill(0, 0, 8192);
    expected.fill(0, 16384, 24576);
    expected.fill(0, 32768, 40960);
    expect(back.equals(expected)).toBe(true);
    expect((await dev.blockStatus(0, 65536)).map((e) => [e.offset, e.length, e.hole])).toEqual([
      [0, 8192, true],
      [8192, 8192, false],
      [16384, 8192, true],
      [24576, 65536 - 24576, false],
    ]);
    await dev.close();
  });

  it("answers blockStatus for at most statusLimit bytes per call", async () => {
    const { dev } = await device(1 << 20, { statusLimit: 65536 });
    const extents = await dev.blockStatus(0, 1 << 20);
    expect(extents).toEqual([{ offset: 0, length: 65536, hole: true, zero: true }]);
    await dev.close();
  });

  it("rejects misaligned and oversize requests with EINVAL, out of range with ENOSPC, before any request", async () => {
    const { dev } = await device(8 << 20);
    proxy.resetCounts();
    const calls = [
      () => dev.read(100, 512),
      () => dev.write(0, pattern(1000, 3)),
      () => dev.write(0, pattern((4 << 20) + 512, 3)),
      () => dev.trim(512, 100),
      () => dev.blockStatus(1, 512),
    ];
    for (const call of calls) {
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BlockError);
      expect(err).toMatchObject({ errno: "EINVAL" });
    }
    await expect(dev.read(8 << 20, 512)).rejects.toMatchObject({ errno: "ENOSPC" });
    expect(proxy.received()).toBe(0);
    await dev.close();
  });

  it("rejects writes on a read-only device with EPERM but serves reads", async () => {
    const { dev } = await device(65536, { readOnly: true });
    await expect(dev.write(0, pattern(512, 4))).rejects.toMatchObject({ errno: "EPERM" });
    await expect(dev.writeZeroes(0, 512)).rejects.toMatchObject({ errno: "EPERM" });
    expect((await dev.read(0, 512)).length).toBe(512);
    await dev.close();
  });

  it("passes storage failures up as the StorageError: a lease broken from outside is LeaseLost, for writes, reads and page ranges", async () => {
    const { dev, name } = await device(65536, { leaseId: "take" });
    await dev.write(0, pattern(4096, 5));
    const blob = fx.container.getBlobClient(name);
    await blob.getBlobLeaseClient().breakLease(0);
    const err = await dev.write(4096, pattern(4096, 6)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ code: "LeaseLost" });
    // Reads carry the lease id too: a fenced writer sees nothing more.
    await expect(dev.read(0, 4096)).rejects.toMatchObject({ code: "LeaseLost" });
    await expect(dev.blockStatus(0, 65536)).rejects.toMatchObject({ code: "LeaseLost" });
    const outside = await blob.downloadToBuffer(0, 8192);
    expect(outside.subarray(0, 4096).equals(pattern(4096, 5))).toBe(true);
    expect(outside.subarray(4096).every((b) => b === 0)).toBe(true);
    await dev.close();
  });

  it("passes throttling up as Throttled for the engine's pause layer", async () => {
    const { dev } = await device(65536);
    proxy.inject({ fault: { type: "busy" }, only: ["putPage"], times: 1 });
    await expect(dev.write(0, pattern(512, 7))).rejects.toMatchObject({ code: "Throttled" });
    await dev.write(0, pattern(512, 7));
    expect(Buffer.from(await dev.read(0, 512)).equals(pattern(512, 7))).toBe(true);
    await dev.close();
  });

  it("close waits for requests in flight, then every call fails with ESHUTDOWN", async () => {
    const { dev } = await device(65536);
    proxy.inject({ fault: { type: "hang" }, only: ["putPage"] });
    const inflight = dev.write(0, pattern(512, 8));
    await proxy.waitFor(() => proxy.received("putPage") >= 1);
    let closed = false;
    const closing = dev.close().then(() => {
      closed = true;
    });
    await expect(dev.read(0, 512)).rejects.toMatchObject({ errno: "ESHUTDOWN" });
    expect(closed).toBe(false);
    proxy.clear();
    await inflight;
    await closing;
    await expect(dev.flush()).rejects.toMatchObject({ errno: "ESHUTDOWN" });
    await expect(dev.write(0, pattern(512, 8))).rejects.toMatchObject({ errno: "ESHUTDOWN" });
  });
});
