/**
 * Reusable buffers for large request payloads.
 *
 * A fresh multi-megabyte allocation is mmap'd memory whose every page
 * faults on first touch; measured on a 2-core VM, copying 1 MiB into fresh
 * buffers ran at 2.5 GB/s against 14 GB/s into a reused one. Large write
 * payloads are therefore assembled in pooled buffers, returned to the pool
 * once the device has finished with them.
 *
 * Buffers come in power-of-two size classes; the pool keeps at most
 * `maxPooledBytes` of idle buffers and lets the rest go to the GC.
 */
export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #maxPooled: number;
  #pooled = 0;

  /** Requests smaller than this are not worth pooling (they come from the heap cheaply). */
  static readonly MIN_SIZE = 64 * 1024;

  constructor(maxPooledBytes = 64 * 1024 * 1024) {
    this.#maxPooled = maxPooledBytes;
  }

  /** Bytes held by idle buffers. */
  get pooledBytes(): number {
    return this.#pooled;
  }

  /** A buffer of at least `size` bytes (its size class); contents are arbitrary. */
  acquire(size: number): Buffer {
    const cls = sizeClass(size);
    const buf = this.#free.get(cls)?.pop();
    if (buf) {
      this.#pooled -= buf.length;
      return buf;
    }
    return Buffer.allocUnsafeSlow(cls);
  }

  /** Give back a buffer obtained from `acquire()`; the caller must not touch it afterwards. */
  release(buf: Buffer): void {
    if (this.#pooled + buf.length > this.#maxPooled || sizeClass(buf.length) !== buf.length) return;
    let list = this.#free.get(buf.length);
    if (!list) {
      list = [];
      this.#free.set(buf.length, list);
    }
    list.push(buf);
    this.#pooled += buf.length;
  }
}

function sizeClass(size: number): number {
  let cls = BufferPool.MIN_SIZE;
  while (cls < size) cls *= 2;
  return cls;
}
