/**
 * The in-flight byte budget: its rules on their own, then a flood of
 * clients that queue large reads and never read a reply, against a server
 * whose budget they exhaust. The server must hold no more than its budget,
 * keep serving a well-behaved client all the while, and give the memory
 * back once the flooders leave.
 */
import { afterEach, describe, expect, it } from "vitest";
import { InflightBudget } from "../../agent/nbd/budget.ts";
import { BufferPool } from "../../agent/nbd/buffer-pool.ts";
import { REQUEST_OVERHEAD } from "../../agent/nbd/transmission.ts";
import { memory, pattern, RecordingLogger, type TestServer, startServer } from "./fixtures.ts";
import { CMD, type RawClient } from "./raw-client.ts";

const MiB = 1024 * 1024;
/** The well-behaved client's request size. */
const GOOD = 64 * 1024;

describe("InflightBudget", () => {
  it("lets one connection hold at most half the budget, and each next one half of what is left", () => {
    const budget = new InflightBudget(100);
    const greedy = budget.share(1000);
    // Nothing is held: the first request may be large.
    expect(greedy.take(40)).toBe(true);
    expect(greedy.take(10)).toBe(true);
    expect(greedy.take(1)).toBe(false); // 51 held would leave only 49 free
    expect(greedy.held).toBe(50);
    const second = budget.share(1000);
    expect(second.take(20)).toBe(true);
    expect(second.take(5)).toBe(true);
    expect(second.take(1)).toBe(false);
    // Free budget shrinks by halves but is never all taken: a small request still fits.
    expect(budget.stats.used).toBe(75);
    expect(budget.share(1000).take(10)).toBe(true);
  });

  it("never charges past the budget, even to an idle server", () => {
    const budget = new InflightBudget(100);
    expect(budget.share(1000).take(101)).toBe(false);
    expect(budget.share(1000).take(100)).toBe(true);
    expect(budget.stats).toMatchObject({ used: 100, peak: 100 });
  });

  it("keeps a connection within its own limit, except for a lone larger request", () => {
    const budget = new InflightBudget(1000);
    const small = budget.share(10);
    expect(small.take(30)).toBe(true); // alone: runs although larger than the limit
    expect(small.take(1)).toBe(false);
    small.give(30);
    expect(small.take(6)).toBe(true);
    expect(small.take(4)).toBe(true);
    expect(small.take(1)).toBe(false);
  });

  it("wakes waiting connections oldest first once bytes are released, and not a cancelled one", async () => {
    const budget = new InflightBudget(100);
    const holder = budget.share(1000);
    expect(holder.take(100)).toBe(true);
    const woken: string[] = [];
    for (const name of ["first", "cancelled", "second"]) {
      const share = budget.share(1000);
      share.wait(() => woken.push(name));
      if (name === "cancelled") share.cancel();
    }
    expect(budget.stats.waiting).toBe(2);
    holder.give(50);
    // Not inside the release: the wake-up comes in a microtask.
    expect(woken).toEqual([]);
    await Promise.resolve();
    expect(woken).toEqual(["first", "second"]);
    expect(budget.stats).toMatchObject({ used: 50, waiting: 0 });
  });
});

describe("NBD server under a flood of unread reads", () => {
  const BUDGET = 32 * MiB;
  const READ = 4 * MiB;
  const FLOODERS = 8;
  const READS_EACH = 8;

  let t: TestServer | undefined;
  const clients: RawClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await t?.close();
    t = undefined;
  });

  it("holds no more than its budget, serves a well-behaved client all the while, and frees the memory after", async () => {
    const logger = new RecordingLogger();
    // The memory backend reads into the buffers the server lends it: the
    // flood's replies are pool buffers, as on the page blob path.
    const device = memory(64 * MiB);
    const pool = new BufferPool(4 * MiB);
    // Requests of at most 4 MiB, so that a 32 MiB budget may hold several.
    const blockSizes = { minimum: 512, preferred: 4096, maximum: READ };
    t = await startServer({ disk: { device, blockSizes } }, { inflightBudget: BUDGET, pool, logger });
    const before = process.memoryUsage().arrayBuffers;

    for (let i = 0; i < FLOODERS; i++) {
      const c = await t.connect();
      clients.push(c);
      await c.handshake("disk");
      c.socket.pause(); // never reads a reply
      for (let j = 0; j < READS_EACH; j++) {
        c.send({ type: CMD.READ, handle: BigInt(j + 1), offset: j * READ, length: READ });
      }
      // Nothing is released while the flood holds, so each flooder waits exactly once.
      await logger.logged("waiting for in-flight budget", i + 1);
    }

    // Every read done is a reply nobody reads: together they stay within the budget.
    const reads = t.server.stats.bytesRead / READ;
    expect(reads).toBeGreaterThan(0);
    expect(reads * (READ + REQUEST_OVERHEAD)).toBeLessThanOrEqual(BUDGET);
    const flooded = t.server.stats.budget;
    expect(flooded.used).toBe(reads * (READ + REQUEST_OVERHEAD));
    expect(flooded.waiting).toBe(FLOODERS);

    const good = await t.connect();
    clients.push(good);
    await good.handshake("disk", { structured: true });
    for (let i = 0; i < 16; i++) {
      const offset = 48 * MiB + i * GOOD;
      const data = pattern(GOOD, i + 1);
      const handle = BigInt(100 + 2 * i);
      expect((await good.request({ type: CMD.WRITE, handle, offset, payload: data })).error).toBe(0);
      const back = await good.request({ type: CMD.READ, handle: handle + 1n, offset, length: data.length });
      expect(back.data?.equals(data)).toBe(true);
    }
    expect(t.server.stats.budget.peak).toBeLessThanOrEqual(BUDGET);
    expect(t.server.stats.bytesRead).toBe(reads * READ + 16 * GOOD);

    for (const c of clients.slice(0, FLOODERS)) c.close();
    await logger.logged("nbd client disconnected", FLOODERS);
    const after = t.server.stats;
    // Every unsent reply was given back, and its buffer came back to the pool...
    expect(after.budget.used).toBe(0);
    expect(after.pool.pooledBytes).toBeLessThanOrEqual(4 * MiB);
    expect(after.pool.freedBytes).toBeGreaterThanOrEqual(reads * READ - 4 * MiB);
    // ... which freed what it does not keep there and then, not at some later
    // collection: what is left is the pool's bound and small change (the
    // well-behaved client's data and the test clients' own buffers).
    const left = process.memoryUsage().arrayBuffers - before;
    // (Measured: about 10 MiB left, against 66 MiB when dropped buffers wait for a collection.)
    expect(left).toBeLessThanOrEqual(4 * MiB + 12 * MiB);
  }, 30_000);
});
