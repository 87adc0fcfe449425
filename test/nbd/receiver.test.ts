/**
 * Receiving: large write payloads are read in place into their assembly
 * buffer, everything else into append-only slabs whose views stay valid for
 * as long as a device holds them.
 */
import { Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { type ReceiveSink, Receiver, receive, SLAB_READ } from "../../agent/nbd/receiver.ts";
import { memory, pattern, type TestServer, startServer } from "./fixtures.ts";
import { CMD } from "./raw-client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/**
 * Uses the lent write data only once the test opens the gate, long after
 * more bytes have arrived on the socket: a payload view into memory the
 * receiver reused would be written with later bytes.
 */
class LateWriter extends MemoryBackend {
  #open: () => void = () => {};
  readonly #gate = new Promise<void>((r) => {
    this.#open = r;
  });
  held = 0;
  #heldWaiter: { n: number; resolve: () => void } | undefined;

  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.held++;
    if (this.#heldWaiter && this.held >= this.#heldWaiter.n) this.#heldWaiter.resolve();
    await this.#gate;
    return super.write(offset, data);
  }

  heldAtLeast(n: number): Promise<void> {
    if (this.held >= n) return Promise.resolve();
    return new Promise((resolve) => {
      this.#heldWaiter = { n, resolve };
    });
  }

  release(): void {
    this.#open();
  }
}

describe("NBD receive path", () => {
  it("reads a large write payload in place, not through Node's read buffers", async () => {
    t = await startServer({ disk: memory(4 * MiB) });
    const c = await t.connect();
    await c.handshake("disk");
    const data = pattern(MiB, 7);
    expect(
      (await c.request({ type: CMD.WRITE, handle: 1n, offset: MiB, payload: data })).error,
    ).toBe(0);
    const back = await c.request({ type: CMD.READ, handle: 2n, offset: MiB, length: MiB });
    expect(back.data?.equals(data)).toBe(true);
    const stats = t.server.stats;
    expect(stats.inPlaceConnections).toBe(1);
    // At most one slab read's worth arrived with the header; the rest landed in place.
    expect(stats.bytesReceivedInPlace).toBeGreaterThanOrEqual(MiB - SLAB_READ);
  });

  it("keeps every held payload intact while later requests stream in", async () => {
    const device = new LateWriter({ size: 8 * MiB });
    t = await startServer({ disk: device }, { maxInflightBytes: 64 * MiB });
    const c = await t.connect();
    await c.handshake("disk");
    // Small payloads (slab views) interleaved with large ones (in place), more
    // than a slab's worth of small ones so slabs are retired while held.
    const writes: Array<{ offset: number; data: Buffer }> = [];
    let offset = 0;
    for (let i = 0; i < 160; i++) {
      const size = i % 8 === 7 ? 256 * KiB : 4 * KiB;
      writes.push({ offset, data: pattern(size, i + 1) });
      offset += size;
    }
    writes.forEach((w, i) => {
      c.send({ type: CMD.WRITE, handle: BigInt(i), offset: w.offset, payload: w.data });
    });
    await device.heldAtLeast(writes.length);
    device.release();
    for (let i = 0; i < writes.length; i++) expect((await c.reply()).error).toBe(0);
    const all = await c.request({ type: CMD.READ, handle: 1000n, offset: 0, length: offset });
    expect(all.data?.equals(Buffer.concat(writes.map((w) => w.data)))).toBe(true);
    expect(t.server.stats.bytesReceivedInPlace).toBeGreaterThan(0);
  });
});

describe("Receiver", () => {
  function sink(): ReceiveSink & { chunks: Buffer[] } {
    const chunks: Buffer[] = [];
    return { chunks, nextRead: () => SLAB_READ, landed: () => {}, data: (c) => chunks.push(c) };
  }

  it("never hands out slab memory twice, so earlier chunks keep their bytes", () => {
    const r = new Receiver();
    const s = sink();
    r.sink = s;
    const copies: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      const view = r.buffer();
      const bytes = pattern(Math.min(view.length, 10_000 + i), i + 1);
      view.set(bytes);
      r.callback(bytes.length, view);
      copies.push(bytes);
    }
    expect(s.chunks).toHaveLength(copies.length);
    expect(s.chunks.every((c, i) => c.equals(copies[i]!))).toBe(true);
  });

  it("reads into the sink's view when it offers one, and reports the landing", () => {
    const r = new Receiver();
    const target = Buffer.alloc(100);
    const landed: Array<[Uint8Array, number]> = [];
    r.sink = {
      nextRead: () => target.subarray(10),
      landed: (v, n) => landed.push([v, n]),
      data: () => {
        throw new Error("bytes went to the slab");
      },
    };
    const view = r.buffer();
    expect(view.buffer).toBe(target.buffer);
    r.callback(5, view);
    expect(landed).toEqual([[view, 5]]);
  });

  it("falls back to 'data' events for a socket without a handle to rebuild", () => {
    const r = new Receiver();
    const s = sink();
    r.sink = s;
    const bare = new Socket();
    const { socket, mode } = receive(bare, r);
    expect(mode).toBe("data-events");
    expect(socket).toBe(bare);
    socket.emit("data", Buffer.from("abc"));
    expect(s.chunks.map(String)).toEqual(["abc"]);
    bare.destroy();
  });
});
