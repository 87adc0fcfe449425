/**
 * Bytes received from a socket, kept as the list of chunks that arrived.
 *
 * Parsing takes exact-size pieces off the front. A piece that lies inside
 * one chunk is returned as a view (no copy); only a piece spanning chunks is
 * concatenated. `skip()` discards bytes, including bytes that have not
 * arrived yet, so an unwanted payload (an oversized write) costs no memory.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  /** Offset of the first unread byte in `#chunks[0]`. */
  #head = 0;
  #length = 0;
  /** Bytes still to discard as they arrive. */
  #skipping = 0;

  /** Bytes buffered and ready to take. */
  get length(): number {
    return this.#length;
  }

  /** Bytes still to be discarded from future pushes. */
  get skipping(): number {
    return this.#skipping;
  }

  /** Append a received chunk (the queue keeps a reference, not a copy). */
  push(chunk: Buffer): void {
    if (this.#skipping > 0) {
      const n = Math.min(this.#skipping, chunk.length);
      this.#skipping -= n;
      if (n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /**
   * Remove and return the first `n` bytes. The caller must have checked
   * `length >= n`. The result may share memory with received chunks.
   */
  take(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`take(${n}) with ${this.#length} buffered`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    const inFirst = first.length - this.#head;
    if (n <= inFirst) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#advanceFirst(n, inFirst);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.takeInto(out, 0, n);
    return out;
  }

  /**
   * Move up to `max` buffered bytes into `target` at `at`; returns how many.
   * Used to assemble a large payload while its chunks are still hot in cache.
   */
  takeInto(target: Uint8Array, at: number, max: number): number {
    let moved = 0;
    while (moved < max && this.#length > 0) {
      const chunk = this.#chunks[0]!;
      const avail = chunk.length - this.#head;
      const m = Math.min(avail, max - moved);
      chunk.copy(target, at + moved, this.#head, this.#head + m);
      moved += m;
      this.#advanceFirst(m, avail);
    }
    return moved;
  }

  /**
   * Discard the next `n` bytes: what is buffered now, and the rest as it
   * arrives. Returns the count still pending after this call.
   */
  skip(n: number): number {
    let rest = n;
    while (rest > 0 && this.#length > 0) {
      const chunk = this.#chunks[0]!;
      const avail = chunk.length - this.#head;
      const m = Math.min(avail, rest);
      rest -= m;
      this.#advanceFirst(m, avail);
    }
    this.#skipping += rest;
    return this.#skipping;
  }

  /** Drop everything, buffered and pending. */
  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#length = 0;
    this.#skipping = 0;
  }

  #advanceFirst(n: number, avail: number): void {
    this.#length -= n;
    if (n === avail) {
      this.#chunks.shift();
      this.#head = 0;
    } else {
      this.#head += n;
    }
  }
}
