/**
 * What the buffer pool keeps idle, and for how long: buffers it does not
 * keep are freed when they are given back, and idle ones once a whole
 * period has passed without use.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { BufferPool } from "../../agent/nbd/buffer-pool.ts";

const KiB = 1024;

afterEach(() => {
  vi.useRealTimers();
});

describe("BufferPool", () => {
  it("frees a buffer it does not keep when it is given back, but never a view of someone's allocation", () => {
    const pool = new BufferPool(128 * KiB);
    const kept = pool.acquire(128 * KiB);
    const dropped = pool.acquire(128 * KiB);
    pool.release(kept);
    pool.release(dropped); // over the bound
    expect(pool.pooledBytes).toBe(128 * KiB);
    expect(pool.freedBytes).toBe(128 * KiB);
    // Freed now, not at the next garbage collection: its memory is gone.
    expect(dropped.buffer.byteLength).toBe(0);
    expect(kept.length).toBe(128 * KiB);

    const parent = Buffer.alloc(512 * KiB, 7);
    pool.release(parent.subarray(0, 96 * KiB)); // not a size class, and a view
    expect(parent.buffer.byteLength).toBe(512 * KiB);
    expect(parent[0]).toBe(7);
    expect(pool.freedBytes).toBe(128 * KiB);
  });

  it("frees its idle buffers once a whole period passes without use, and keeps them while in use", () => {
    vi.useFakeTimers();
    const pool = new BufferPool(1024 * KiB, 1000);
    const a = pool.acquire(256 * KiB);
    const b = pool.acquire(256 * KiB);
    pool.release(a);
    pool.release(b);
    expect(pool.pooledBytes).toBe(512 * KiB);

    // In use in every period: kept.
    for (let i = 0; i < 3; i++) {
      vi.advanceTimersByTime(900);
      pool.release(pool.acquire(256 * KiB));
    }
    expect(pool.pooledBytes).toBe(512 * KiB);

    // A whole period with no use: everything idle is freed.
    vi.advanceTimersByTime(2000);
    expect(pool.pooledBytes).toBe(0);
    expect(pool.freedBytes).toBe(512 * KiB);
    expect(a.buffer.byteLength).toBe(0);
    expect(vi.getTimerCount()).toBe(0); // nothing idle, no timer left behind

    // A new buffer after that is a fresh allocation, and the pool works as before.
    const c = pool.acquire(256 * KiB);
    expect(c.length).toBe(256 * KiB);
    pool.release(c);
    expect(pool.pooledBytes).toBe(256 * KiB);
  });
});
