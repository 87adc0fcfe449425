/**
 * Memory backend: a sparse RAM device with page blob rules (512-byte pages,
 * at most 4 MiB per write), for benchmarks, protocol tests and `serve memory:`.
 * Like nbdkit's memory plugin, it is a product feature, not a test double.
 *
 * Concurrency: every call completes synchronously inside its promise, so
 * requests are atomic with respect to each other.
 */
import { BlockError, type BlockDevice, type Extent } from "../nbd/device.ts";

export const PAGE = 512;
export const MAX_PUT = 4 * 1024 * 1024;
/** Allocation unit, as nbdkit's sparse array pages: big enough that a 1 MiB request touches few. */
const CHUNK = 64 * 1024;

export interface MemoryOptions {
  size: number;
  readOnly?: boolean;
}

export class MemoryBackend implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSizes = { minimum: PAGE, preferred: 4096, maximum: MAX_PUT };
  readonly canMultiConn = true;
  #chunks = new Map<number, Buffer>();
  #closed = false;

  constructor(opts: MemoryOptions) {
    if (!Number.isSafeInteger(opts.size) || opts.size < 0 || opts.size % PAGE !== 0) {
      throw new RangeError(`memory size must be a multiple of ${PAGE} bytes, got ${opts.size}`);
    }
    this.size = opts.size;
    this.readOnly = opts.readOnly ?? false;
  }

  /** Bytes of RAM holding data (allocated chunks). */
  get allocatedBytes(): number {
    return this.#chunks.size * CHUNK;
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.#check(offset, length, false);
    const out =
      into && into.byteLength === length
        ? Buffer.from(into.buffer, into.byteOffset, length)
        : Buffer.allocUnsafe(length);
    this.#each(offset, length, (idx, at, from, n) => {
      const chunk = this.#chunks.get(idx);
      if (chunk) chunk.copy(out, from, at, at + n);
      else out.fill(0, from, from + n);
    });
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#check(offset, data.length, true);
    if (data.length > MAX_PUT) throw new BlockError("EINVAL", "write larger than 4 MiB");
    const src = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.#each(offset, data.length, (idx, at, from, n) => {
      let chunk = this.#chunks.get(idx);
      if (!chunk) {
        chunk = Buffer.alloc(CHUNK);
        this.#chunks.set(idx, chunk);
      }
      src.copy(chunk, at, from, from + n);
    });
  }

  async flush(): Promise<void> {
    this.#check(0, 0, false);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    this.#each(offset, length, (idx, at, _from, n) => {
      const chunk = this.#chunks.get(idx);
      if (!chunk) return;
      if (n === CHUNK) this.#chunks.delete(idx);
      else {
        chunk.fill(0, at, at + n);
        if (isZero(chunk)) this.#chunks.delete(idx);
      }
    });
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.#check(offset, length, false);
    const extents: Extent[] = [];
    this.#each(offset, length, (idx, _at, from, n) => {
      const hole = !this.#chunks.has(idx);
      const last = extents[extents.length - 1];
      if (last && last.hole === hole) last.length += n;
      else extents.push({ offset: offset + from, length: n, hole, zero: hole });
    });
    return extents;
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#check(offset, length, false);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#chunks.clear();
  }

  #check(offset: number, length: number, writing: boolean): void {
    if (this.#closed) throw new BlockError("ESHUTDOWN", "device is closed");
    if (writing && this.readOnly) throw new BlockError("EPERM", "device is read-only");
    if (offset % PAGE !== 0 || length % PAGE !== 0) {
      throw new BlockError("EINVAL", `unaligned request ${offset}+${length}`);
    }
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new BlockError("ENOSPC", `request ${offset}+${length} beyond end ${this.size}`);
    }
  }

  /** Walk [offset, offset+length) chunk by chunk: (chunk index, offset in chunk, offset in request, bytes). */
  #each(offset: number, length: number, fn: (idx: number, at: number, from: number, n: number) => void) {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / CHUNK);
      const at = pos - idx * CHUNK;
      const n = Math.min(CHUNK - at, end - pos);
      fn(idx, at, pos - offset, n);
      pos += n;
    }
  }
}

const ZERO_CHUNK = Buffer.alloc(CHUNK);
function isZero(buf: Buffer): boolean {
  return buf.equals(ZERO_CHUNK);
}
