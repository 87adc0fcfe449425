/**
 * Payload donation: a large write's pooled buffer is offered to the device,
 * taken at most once and only as exactly those bytes, returned to the pool
 * when nobody took it; over a live server, the memory backend keeps 1 MiB
 * payloads as its chunks and every byte still reads back right.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { BufferPool } from "../../agent/nbd/buffer-pool.ts";
import { PooledDonation } from "../../agent/nbd/donation.ts";
import { runTool } from "../harness/tools.ts";
import { serveMemory } from "../interop/memory-server.ts";
import { pattern, ProbeDevice, type TestServer, startServer } from "./fixtures.ts";
import { CMD } from "./raw-client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

describe("PooledDonation", () => {
  it("gives the buffer to the first taker of exactly its bytes, once", () => {
    const pool = new BufferPool();
    const buf = pool.acquire(128 * KiB);
    const d = new PooledDonation(pool, buf);
    expect(d.open).toBe(true);
    expect(d.take(buf.subarray(0, 64 * KiB))).toBeUndefined(); // part of it
    expect(d.take(buf.subarray(512))).toBeUndefined(); // not from its start
    expect(d.take(Buffer.from(buf))).toBeUndefined(); // a copy
    expect(d.take(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength))).toBe(buf);
    expect(d.taken).toBe(true);
    expect(d.take(buf)).toBeUndefined(); // a second replica copies instead
    d.settle();
    expect(d.open).toBe(false);
    expect(pool.pooledBytes).toBe(0); // the taker owns it now
  });

  it("returns an untaken buffer to the pool when the write settles, and is closed after", () => {
    const pool = new BufferPool();
    const buf = pool.acquire(64 * KiB);
    const d = new PooledDonation(pool, buf);
    d.settle();
    d.settle();
    expect(pool.pooledBytes).toBe(64 * KiB);
    expect(d.take(buf)).toBeUndefined();
    expect(d.taken).toBe(false);
    expect(pool.acquire(64 * KiB)).toBe(buf);
  });

  it("recycles whole allocations of a pool size class, never views", () => {
    const pool = new BufferPool();
    const d = new PooledDonation(pool, pool.acquire(64 * KiB));
    d.recycle(Buffer.alloc(2 * 64 * KiB).subarray(0, 64 * KiB));
    d.recycle(Buffer.alloc(96 * KiB)); // not a size class: the pool refuses it
    expect(pool.pooledBytes).toBe(0);
    const spare = Buffer.alloc(64 * KiB);
    d.recycle(spare);
    expect(pool.pooledBytes).toBe(64 * KiB);
    expect(pool.acquire(64 * KiB)).toBe(spare);
  });
});

describe("NBD writes with donated payloads", () => {
  it("offers only payloads that fill their pooled buffer, and gets back what was not taken", async () => {
    // ProbeDevice copies what it is given, so it never takes a donation.
    const device = new ProbeDevice(new MemoryBackend({ size: 8 * MiB }));
    t = await startServer({ disk: device });
    const c = await t.connect();
    await c.handshake("disk");
    const sizes = [4 * KiB, 64 * KiB, MiB, MiB + 512];
    let offset = 0;
    for (const [i, n] of sizes.entries()) {
      const r = await c.request({
        type: CMD.WRITE,
        handle: BigInt(i),
        offset,
        payload: pattern(n, i),
      });
      expect(r.error).toBe(0);
      offset += 2 * MiB;
    }
    expect(device.calls.map((x) => [x.length, x.opts?.donation !== undefined])).toEqual([
      [4 * KiB, false],
      [64 * KiB, true],
      [MiB, true],
      [MiB + 512, false],
    ]);
    expect(device.calls.every((x) => x.opts?.donation?.open !== true)).toBe(true);
    expect(t.server.stats.bytesDonated).toBe(0);
  });

  it("lets the memory backend keep 1 MiB payloads; reads, overwrites and holes stay right", async () => {
    const device = new MemoryBackend({ size: 8 * MiB });
    t = await startServer({ disk: device });
    const c = await t.connect();
    await c.handshake("disk", { structured: true });
    const a = pattern(MiB, 1);
    const b = pattern(MiB, 2);
    const cc = pattern(MiB, 3);
    // Pipelined: write A, read it (a view of the chunk, lent to the socket),
    // overwrite with B, read, partial write, read, overwrite with C, read.
    // Each reply must carry the bytes of its moment, though chunks are
    // adopted and replaced chunks go back to the pool for the next payload.
    const small = pattern(4 * KiB, 9);
    c.send({ type: CMD.WRITE, handle: 1n, offset: MiB, payload: a });
    c.send({ type: CMD.READ, handle: 2n, offset: MiB, length: MiB });
    c.send({ type: CMD.WRITE, handle: 3n, offset: MiB, payload: b });
    c.send({ type: CMD.READ, handle: 4n, offset: MiB, length: MiB });
    c.send({ type: CMD.WRITE, handle: 5n, offset: MiB + 8 * KiB, payload: small });
    c.send({ type: CMD.READ, handle: 6n, offset: MiB, length: MiB });
    c.send({ type: CMD.WRITE, handle: 7n, offset: MiB, payload: cc });
    c.send({ type: CMD.READ, handle: 8n, offset: MiB, length: MiB });
    for (let i = 0; i < 4; i++) {
      const offset = (4 + i) * MiB;
      c.send({ type: CMD.WRITE, handle: 10n + BigInt(i), offset, payload: pattern(MiB, 20 + i) });
    }
    const replies = new Map<bigint, Buffer | undefined>();
    for (let i = 0; i < 12; i++) {
      const r = await c.reply();
      expect(r.error).toBe(0);
      replies.set(r.handle, r.data);
    }
    const bPatched = Buffer.from(b);
    small.copy(bPatched, 8 * KiB);
    expect(replies.get(2n)?.equals(a)).toBe(true);
    expect(replies.get(4n)?.equals(b)).toBe(true);
    expect(replies.get(6n)?.equals(bPatched)).toBe(true);
    expect(replies.get(8n)?.equals(cc)).toBe(true);
    for (let i = 0; i < 4; i++) {
      const offset = (4 + i) * MiB;
      const r = await c.request({ type: CMD.READ, handle: 20n + BigInt(i), offset, length: MiB });
      expect(r.data?.equals(pattern(MiB, 20 + i))).toBe(true);
    }
    // Every whole-chunk write was kept, not copied; chunks never written stay holes.
    expect(t.server.stats.bytesDonated).toBe(7 * MiB);
    expect(device.allocatedBytes).toBe(5 * MiB);
    const hole = await c.request({ type: CMD.READ, handle: 30n, offset: 0, length: MiB });
    expect(hole.data?.every((x) => x === 0)).toBe(true);
  });

  it("keeps fio's 1 MiB writes through the whole engine stack; fio verifies them", async () => {
    const srv = await serveMemory({ disk: { size: 64 * MiB } });
    try {
      // Twice over the same blocks, each pass verified: the second pass
      // replaces chunks that the first pass's verify reads lent to the socket.
      for (const seed of [1, 2]) {
        const output = join(srv.dir, `pass-${seed}.json`);
        await runTool("fio", [
          `--name=pass-${seed}`,
          "--ioengine=nbd",
          `--uri=${srv.uri("disk")}`,
          "--rw=write",
          "--bs=1M",
          "--iodepth=8",
          "--size=32M",
          "--verify=crc32c",
          `--randseed=${seed}`, // other bytes on the second pass
          "--do_verify=1",
          "--verify_fatal=1",
          "--verify_state_save=0",
          "--output-format=json",
          `--output=${output}`,
        ]);
        const report = JSON.parse(await readFile(output, "utf8")) as {
          jobs: Array<{ error: number; read: { io_bytes: number } }>;
        };
        expect(report.jobs[0]!.error).toBe(0);
        expect(report.jobs[0]!.read.io_bytes).toBe(32 * MiB);
      }
      const stats = srv.server.stats;
      expect(stats.errors).toBe(0);
      expect(stats.bytesDonated).toBe(64 * MiB);
      expect(srv.devices.get("disk")!.allocatedBytes).toBe(32 * MiB);
    } finally {
      await srv.close();
    }
  });
});
