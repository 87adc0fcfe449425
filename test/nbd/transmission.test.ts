/**
 * The transmission phase against a live server: commands, replies (simple
 * and structured), out-of-order completion, validation at the edge, faults,
 * and back-pressure.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { MemoryBackend } from "../../agent/engine/memory.ts";
import type { BlockDevice } from "../../agent/nbd/device.ts";
import {
  memory,
  pattern,
  ProbeDevice,
  RecordingLogger,
  type TestServer,
  startServer,
} from "./fixtures.ts";
import { CMD, descriptors, ERR, errorMessage, FLAG, MAGIC, type RawClient } from "./raw-client.ts";

const MiB = 1024 * 1024;
let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function serve(
  device: BlockDevice = memory(4 * MiB),
  opts: Parameters<typeof startServer>[1] = {},
) {
  t = await startServer({ disk: device, ro: { device: memory(MiB), readOnly: true } }, opts);
  return t;
}

async function client(
  server: TestServer,
  opts: { structured?: boolean; meta?: boolean; name?: string } = {},
): Promise<RawClient & { contextId?: number }> {
  const c = await server.connect();
  const { contextId } = await c.handshake(opts.name ?? "disk", opts);
  return Object.assign(c, contextId !== undefined ? { contextId } : {});
}

describe.each([
  ["simple replies", false],
  ["structured replies", true],
])("NBD transmission with %s", (_label, structured) => {
  it("writes and reads back data, including after a flush", async () => {
    const s = await serve();
    const c = await client(s, { structured });
    const data = pattern(8192, 3);
    expect(
      (await c.request({ type: CMD.WRITE, handle: 1n, offset: 4096, payload: data })).error,
    ).toBe(0);
    expect((await c.request({ type: CMD.FLUSH, handle: 2n })).error).toBe(0);
    const r = await c.request({ type: CMD.READ, handle: 3n, offset: 4096, length: 8192 });
    expect(r.error).toBe(0);
    expect(r.structured).toBe(structured);
    expect(r.data?.equals(data)).toBe(true);
  });

  it("round-trips large writes and reads through the pooled buffers", async () => {
    const s = await serve(memory(16 * MiB));
    const c = await client(s, { structured });
    const blocks = [pattern(MiB, 1), pattern(3 * MiB, 2), pattern(MiB + 512, 3)];
    let offset = 0;
    let handle = 10n;
    for (const b of blocks) {
      c.send({ type: CMD.WRITE, handle: handle++, offset, payload: b });
      offset += 4 * MiB;
    }
    for (let i = 0; i < blocks.length; i++) expect((await c.reply()).error).toBe(0);
    offset = 0;
    for (const b of blocks) {
      c.send({ type: CMD.READ, handle: handle++, offset, length: b.length });
      offset += 4 * MiB;
    }
    const replies = new Map<bigint, Buffer | undefined>();
    for (let i = 0; i < blocks.length; i++) {
      const r = await c.reply();
      replies.set(r.handle, r.data);
    }
    blocks.forEach((b, i) => {
      expect(replies.get(13n + BigInt(i))?.equals(b)).toBe(true);
    });
  });

  it("refuses out-of-range, zero-length, unknown and oversized requests, then keeps serving", async () => {
    const s = await serve();
    const c = await client(s, { structured });
    const size = 4 * MiB;
    expect(
      (await c.request({ type: CMD.READ, handle: 1n, offset: size - 512, length: 1024 })).error,
    ).toBe(ERR.EINVAL);
    expect((await c.request({ type: CMD.READ, handle: 2n, offset: 0, length: 0 })).error).toBe(
      ERR.EINVAL,
    );
    expect((await c.request({ type: 77, handle: 3n, offset: 0, length: 512 })).error).toBe(
      ERR.EINVAL,
    );
    expect(
      (await c.request({ type: CMD.READ, handle: 4n, offset: 0, length: 512, flags: 0x100 })).error,
    ).toBe(ERR.EINVAL);
    expect(
      (await c.request({ type: CMD.READ, handle: 5n, offset: 0, length: 33 * MiB })).error,
    ).toBe(ERR.EINVAL);
    expect((await c.request({ type: CMD.TRIM, handle: 6n, offset: size, length: 512 })).error).toBe(
      ERR.EINVAL,
    );
    expect((await c.request({ type: CMD.FLUSH, handle: 7n, offset: 512 })).error).toBe(ERR.EINVAL);
    expect(
      (await c.request({ type: CMD.BLOCK_STATUS, handle: 8n, offset: 0, length: 512 })).error,
    ).toBe(ERR.EINVAL);
    // A write past the end is refused, and its payload is consumed, not parsed as requests.
    const evil = Buffer.alloc(4096);
    evil.writeUInt32BE(MAGIC.REQUEST, 0); // looks like a request header
    expect(
      (await c.request({ type: CMD.WRITE, handle: 9n, offset: size - 512, payload: evil })).error,
    ).toBe(ERR.ENOSPC);
    expect(
      (await c.request({ type: CMD.WRITE_ZEROES, handle: 10n, offset: size, length: 512 })).error,
    ).toBe(ERR.ENOSPC);
    const ok = await c.request({ type: CMD.READ, handle: 11n, offset: 0, length: 512 });
    expect(ok.error).toBe(0);
    expect(ok.data?.length).toBe(512);
  });

  it("consumes the payload of an oversized write, answers EINVAL, and keeps serving", async () => {
    const device = new ProbeDevice(memory());
    const s = await serve(device);
    const c = await client(s, { structured });
    const big = Buffer.alloc(33 * MiB, 0xee);
    c.send({ type: CMD.WRITE, handle: 1n, offset: 0, payload: big });
    c.send({ type: CMD.WRITE, handle: 2n, offset: 0, payload: pattern(512) });
    const first = await c.reply();
    expect([first.handle, first.error]).toEqual([1n, ERR.EINVAL]);
    const second = await c.reply();
    expect([second.handle, second.error]).toEqual([2n, 0]);
    expect(device.calls.filter((x) => x.op === "write").map((x) => x.length)).toEqual([512]);
  });

  it("refuses writes on a read-only export with EPERM and consumes their payload", async () => {
    const s = await serve();
    const c = await client(s, { structured, name: "ro" });
    expect(
      (await c.request({ type: CMD.WRITE, handle: 1n, offset: 0, payload: pattern(4096) })).error,
    ).toBe(ERR.EPERM);
    expect((await c.request({ type: CMD.TRIM, handle: 2n, offset: 0, length: 4096 })).error).toBe(
      ERR.EPERM,
    );
    expect(
      (await c.request({ type: CMD.WRITE_ZEROES, handle: 3n, offset: 0, length: 4096 })).error,
    ).toBe(ERR.EPERM);
    expect((await c.request({ type: CMD.READ, handle: 4n, offset: 0, length: 4096 })).error).toBe(
      0,
    );
  });

  it("reports device errors as their errno, and keeps serving", async () => {
    const device = new ProbeDevice(memory());
    device.failWith((call) => (call.op === "read" && call.offset === 0 ? "EIO" : undefined));
    const s = await serve(device);
    const c = await client(s, { structured });
    const r = await c.request({ type: CMD.READ, handle: 1n, offset: 0, length: 4096 });
    expect(r.error).toBe(ERR.EIO);
    expect(r.data).toBeUndefined();
    if (structured) expect(errorMessage(r)).toContain("injected EIO");
    expect(
      (await c.request({ type: CMD.READ, handle: 2n, offset: 4096, length: 4096 })).error,
    ).toBe(0);
  });

  it("passes unaligned requests to the device, which decides", async () => {
    const s = await serve();
    const c = await client(s, { structured });
    // MemoryBackend only takes 512-byte multiples; the edge does not pre-empt it.
    expect((await c.request({ type: CMD.READ, handle: 1n, offset: 100, length: 10 })).error).toBe(
      ERR.EINVAL,
    );
  });
});

describe("NBD transmission", () => {
  it("runs requests concurrently and replies as each completes, out of order", async () => {
    const device = new ProbeDevice(memory());
    const s = await serve(device);
    const c = await client(s, { structured: true });
    await c.request({ type: CMD.WRITE, handle: 1n, offset: 8192, payload: pattern(4096, 9) });
    device.hold((call) => call.op === "read" && call.offset === 0);
    c.send({ type: CMD.READ, handle: 10n, offset: 0, length: 4096 });
    c.send({ type: CMD.READ, handle: 11n, offset: 8192, length: 4096 });
    await device.heldAtLeast(1);
    const first = await c.reply();
    expect(first.handle).toBe(11n);
    expect(first.data?.equals(pattern(4096, 9))).toBe(true);
    device.release();
    expect((await c.reply()).handle).toBe(10n);
  });

  it("has many writes at the device at once", async () => {
    const device = new ProbeDevice(memory());
    const s = await serve(device);
    const c = await client(s);
    device.hold((call) => call.op === "write");
    for (let i = 0; i < 8; i++)
      c.send({ type: CMD.WRITE, handle: BigInt(i), offset: i * 4096, payload: pattern(4096, i) });
    await device.heldAtLeast(8);
    device.release();
    const handles = new Set<bigint>();
    for (let i = 0; i < 8; i++) handles.add((await c.reply()).handle);
    expect(handles.size).toBe(8);
    expect(device.maxConcurrent).toBe(8);
  });

  it("sends a read with DF as exactly one content chunk", async () => {
    const s = await serve();
    const c = await client(s, { structured: true });
    const r = await c.request({
      type: CMD.READ,
      handle: 1n,
      offset: 0,
      length: 2 * MiB,
      flags: FLAG.DF,
    });
    expect(r.error).toBe(0);
    expect(r.chunks.filter((x) => x.type === 1 || x.type === 2)).toHaveLength(1);
    expect(r.data?.length).toBe(2 * MiB);
  });

  it("offers a pooled buffer to large reads only", async () => {
    const device = new ProbeDevice(memory());
    const s = await serve(device);
    const c = await client(s, { structured: true });
    await c.request({ type: CMD.READ, handle: 1n, offset: 0, length: 4096 });
    await c.request({ type: CMD.READ, handle: 2n, offset: 0, length: MiB });
    expect(device.calls.map((x) => [x.length, x.into])).toEqual([
      [4096, false],
      [MiB, true],
    ]);
  });

  it("passes FUA, NO_HOLE and FAST_ZERO to the device and reads zeroes back", async () => {
    const device = new ProbeDevice(memory());
    const s = await serve(device);
    const c = await client(s);
    await c.request({
      type: CMD.WRITE,
      handle: 1n,
      offset: 0,
      payload: pattern(8192),
      flags: FLAG.FUA,
    });
    await c.request({
      type: CMD.WRITE_ZEROES,
      handle: 2n,
      offset: 0,
      length: 4096,
      flags: FLAG.NO_HOLE | FLAG.FUA,
    });
    await c.request({
      type: CMD.WRITE_ZEROES,
      handle: 3n,
      offset: 4096,
      length: 4096,
      flags: FLAG.FAST_ZERO,
    });
    await c.request({ type: CMD.TRIM, handle: 4n, offset: 0, length: 4096, flags: FLAG.FUA });
    await c.request({ type: CMD.CACHE, handle: 5n, offset: 0, length: 4096 });
    expect(device.calls.map((x) => [x.op, x.opts])).toEqual([
      ["write", { fua: true }],
      ["writeZeroes", { fua: true, noHole: true, fastZero: false }],
      ["writeZeroes", { fua: false, noHole: false, fastZero: true }],
      ["trim", { fua: true }],
      ["cache", undefined],
    ]);
    const r = await c.request({ type: CMD.READ, handle: 6n, offset: 0, length: 8192 });
    expect(r.data?.every((b) => b === 0)).toBe(true);
  });

  it("answers BLOCK_STATUS with the negotiated context id, showing holes after TRIM", async () => {
    const s = await serve();
    const c = await client(s, { meta: true });
    expect(c.contextId).toBeGreaterThan(0);
    // MiB-scale regions, so the result does not depend on the backend's allocation unit.
    await c.request({ type: CMD.WRITE, handle: 1n, offset: 0, payload: pattern(MiB) });
    await c.request({ type: CMD.TRIM, handle: 2n, offset: MiB / 4, length: MiB / 4 });
    const r = await c.request({ type: CMD.BLOCK_STATUS, handle: 3n, offset: 0, length: 2 * MiB });
    expect(r.error).toBe(0);
    const { contextId, extents } = descriptors(r);
    expect(contextId).toBe(c.contextId);
    expect(extents).toEqual([
      [MiB / 4, 0],
      [MiB / 4, 3],
      [MiB / 2, 0],
      [MiB, 3],
    ]);
    const one = await c.request({
      type: CMD.BLOCK_STATUS,
      handle: 4n,
      offset: 0,
      length: MiB,
      flags: FLAG.REQ_ONE,
    });
    expect(descriptors(one).extents).toEqual([[MiB / 4, 0]]);
  });

  it("refuses BLOCK_STATUS when the context was set for another export", async () => {
    const s = await serve();
    const c = await s.connect();
    await c.greet();
    await c.negotiateStructured();
    await c.setMetaContext("ro", ["base:allocation"]);
    await c.go("disk");
    expect(
      (await c.request({ type: CMD.BLOCK_STATUS, handle: 1n, offset: 0, length: 4096 })).error,
    ).toBe(ERR.EINVAL);
  });

  it("answers requests in flight before honouring DISC, then closes", async () => {
    const device = new ProbeDevice(memory());
    const s = await serve(device);
    const c = await client(s);
    device.hold((call) => call.op === "write");
    c.send({ type: CMD.WRITE, handle: 1n, offset: 0, payload: pattern(4096) });
    await device.heldAtLeast(1);
    c.send({ type: CMD.DISC, handle: 2n });
    device.release();
    const r = await c.reply();
    expect([r.handle, r.error]).toEqual([1n, 0]);
    await c.closed;
    expect(
      Buffer.from(await (device.inner as MemoryBackend).read(0, 4096)).equals(pattern(4096)),
    ).toBe(true);
  });

  it("drops a connection that sends a bad request magic; others keep working", async () => {
    const s = await serve();
    const bad = await client(s);
    const good = await client(s);
    bad.write(Buffer.alloc(28, 0xab));
    await bad.closed;
    expect((await good.request({ type: CMD.READ, handle: 1n, offset: 0, length: 512 })).error).toBe(
      0,
    );
  });

  it("survives a client that sends half a request, or half a payload, then leaves", async () => {
    const s = await serve();
    const half = await client(s);
    const header = Buffer.alloc(28);
    header.writeUInt32BE(MAGIC.REQUEST, 0);
    half.write(header.subarray(0, 13));
    half.close();
    const partial = await client(s);
    // A write header promising 1 MiB, followed by only 1000 bytes of it.
    partial.send({
      type: CMD.WRITE,
      handle: 1n,
      offset: 0,
      length: MiB,
      payload: Buffer.alloc(1000),
    });
    partial.close();
    await Promise.all([half.closed, partial.closed]);
    const good = await client(s);
    expect((await good.request({ type: CMD.READ, handle: 1n, offset: 0, length: 512 })).error).toBe(
      0,
    );
    expect(s.server.stats.errors).toBe(0);
  });

  it("stops reading from a client whose in-flight bytes exceed the cap, and resumes", async () => {
    const device = new ProbeDevice(memory(8 * MiB));
    const logger = new RecordingLogger();
    const s = await serve(device as never, { maxInflightBytes: MiB, logger });
    const c = await client(s);
    device.hold((call) => call.op === "write");
    const blocks = Array.from({ length: 8 }, (_, i) => pattern(512 * 1024, i + 1));
    blocks.forEach((b, i) => {
      c.send({ type: CMD.WRITE, handle: BigInt(i), offset: i * 512 * 1024, payload: b });
    });
    await logger.logged("paused");
    const started = device.calls.length;
    expect(started).toBeLessThanOrEqual(3);
    device.release();
    for (let i = 0; i < blocks.length; i++) expect((await c.reply()).error).toBe(0);
    expect(device.calls.length).toBe(8);
    const all = await c.request({ type: CMD.READ, handle: 100n, offset: 0, length: 4 * MiB });
    expect(all.data?.equals(Buffer.concat(blocks))).toBe(true);
  });
});
