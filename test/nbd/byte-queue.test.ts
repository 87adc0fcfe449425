import { describe, expect, it } from "vitest";
import { BufferPool } from "../../agent/nbd/buffer-pool.ts";
import { ByteQueue } from "../../agent/nbd/byte-queue.ts";

describe("ByteQueue", () => {
  it("takes a piece inside one chunk as a view, without copying", () => {
    const q = new ByteQueue();
    const chunk = Buffer.from("abcdefgh");
    q.push(chunk);
    const piece = q.take(3);
    expect(piece.toString()).toBe("abc");
    expect(piece.buffer).toBe(chunk.buffer);
    expect(q.length).toBe(5);
  });

  it("concatenates a piece that spans chunks, in order", () => {
    const q = new ByteQueue();
    q.push(Buffer.from("ab"));
    q.push(Buffer.from("cde"));
    q.push(Buffer.from("fg"));
    expect(q.take(1).toString()).toBe("a");
    expect(q.take(5).toString()).toBe("bcdef");
    expect(q.take(1).toString()).toBe("g");
    expect(q.length).toBe(0);
    expect(() => q.take(1)).toThrow(RangeError);
  });

  it("moves bytes into a target across chunks with takeInto", () => {
    const q = new ByteQueue();
    q.push(Buffer.from("0123"));
    q.push(Buffer.from("4567"));
    const target = Buffer.alloc(10, ".");
    expect(q.takeInto(target, 1, 6)).toBe(6);
    expect(target.toString()).toBe(".012345...");
    expect(q.takeInto(target, 7, 5)).toBe(2);
    expect(target.toString()).toBe(".01234567.");
    expect(q.length).toBe(0);
  });

  it("skips bytes that are buffered and bytes that have not arrived yet", () => {
    const q = new ByteQueue();
    q.push(Buffer.from("xxxx"));
    expect(q.skip(10)).toBe(6);
    q.push(Buffer.from("yyy"));
    expect(q.skipping).toBe(3);
    q.push(Buffer.from("yyyNEXT"));
    expect(q.skipping).toBe(0);
    expect(q.take(4).toString()).toBe("NEXT");
  });

  it("clear drops buffered bytes and pending skips", () => {
    const q = new ByteQueue();
    q.push(Buffer.from("abc"));
    q.skip(10);
    q.clear();
    q.push(Buffer.from("z"));
    expect(q.take(1).toString()).toBe("z");
  });
});

describe("BufferPool", () => {
  it("hands back a released buffer of the same size class", () => {
    const pool = new BufferPool(4 << 20);
    const a = pool.acquire(100_000);
    expect(a.length).toBe(128 * 1024);
    pool.release(a);
    expect(pool.pooledBytes).toBe(128 * 1024);
    expect(pool.acquire(70_000)).toBe(a);
    expect(pool.acquire(70_000)).not.toBe(a);
  });

  it("keeps no more than its cap of idle buffers", () => {
    const pool = new BufferPool(1 << 20);
    const bufs = [pool.acquire(1 << 20), pool.acquire(1 << 20)];
    for (const b of bufs) pool.release(b);
    expect(pool.pooledBytes).toBe(1 << 20);
  });
});
