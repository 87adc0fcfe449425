/**
 * A large write's pooled payload buffer, offered to the device.
 *
 * The memory backend used to copy each 1 MiB write from the connection's
 * pooled buffer into its chunk; that memcpy was most of the serving
 * thread's work (measured with --cpu-prof during fio 1 MiB writes). When the
 * device takes the buffer instead, it keeps it as the chunk and hands back
 * the chunk it replaced, which the pool gives to the next large write: the
 * socket then reads straight into the device's memory, as it would into any
 * warm buffer, and no byte is copied in user space.
 *
 * Lifetime: open from the write's start until it settles. While open the
 * device may take the buffer (once); when the write settles, a buffer nobody
 * took goes back to the pool, and a taken one is the device's for good.
 */
import type { BufferPool } from "./buffer-pool.ts";
import type { PayloadDonation } from "./device.ts";

/** The donation of one pooled write payload; settle it when the write has settled. */
export class PooledDonation implements PayloadDonation {
  readonly #pool: BufferPool;
  #buffer: Buffer | undefined;
  #taken = false;

  /** `buffer` came from `pool.acquire()`; the payload is all of it. */
  constructor(pool: BufferPool, buffer: Buffer) {
    this.#pool = pool;
    this.#buffer = buffer;
  }

  get open(): boolean {
    return this.#buffer !== undefined;
  }

  /** Whether a device took the buffer. */
  get taken(): boolean {
    return this.#taken;
  }

  take(data: Uint8Array): Buffer | undefined {
    const buf = this.#buffer;
    if (
      buf === undefined ||
      this.#taken ||
      data.buffer !== buf.buffer ||
      data.byteOffset !== buf.byteOffset ||
      data.byteLength !== buf.byteLength
    ) {
      return undefined;
    }
    this.#taken = true;
    return buf;
  }

  recycle(spare: Buffer): void {
    // Only whole allocations: a view would let the pool hand out memory that
    // something else still shares.
    if (spare.byteOffset !== 0 || spare.byteLength !== spare.buffer.byteLength) return;
    this.#pool.release(spare);
  }

  /** The write has settled: an untaken buffer goes back to the pool. Idempotent. */
  settle(): void {
    const buf = this.#buffer;
    if (buf === undefined) return;
    this.#buffer = undefined;
    if (!this.#taken) this.#pool.release(buf);
  }
}
