/**
 * Dirty-region log: which parts of a volume a replica has missed since it
 * went offline, one bit per `granularity` bytes, persisted so an agent
 * restart keeps it (issue 5 design, "Dirty-region log").
 *
 * File: `<dir>/<replicaId>.<epoch>.bitmap`, mode 0600: a 32-byte header
 * (magic, granularity, size) then the bitmap. A file whose header does not
 * match what the volume expects (resized, other granularity, torn) is read
 * as "everything dirty": a full copy is always correct, a lost bit never is.
 *
 * Concurrency: `mark` sets its bits in memory at once and resolves when a
 * flush that started after the bits were set has reached the disk (write +
 * fdatasync). Setters share flushes: while one runs, every new bit waits for
 * the single next one (group commit). A mark whose bits are all set already
 * resolves when the flush that carries them has completed, so a caller never
 * acknowledges a bit that is not durable yet.
 */
import { mkdir, open, readdir, rm, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";

/** Bytes per bit unless told otherwise. */
export const DEFAULT_GRANULARITY = 1024 * 1024;
/** Smallest granularity: keeps an 8 TiB volume's bitmap at 16 MiB at most. */
export const MIN_GRANULARITY = 64 * 1024;

const MAGIC = Buffer.from("PDDIRTY1", "latin1");
const HEADER = 32;

/** A dirty range of the volume, whole granules clipped to the volume's size. */
export interface DirtyRegion {
  offset: number;
  length: number;
}

export class DirtyLogError extends Error {
  readonly code = "DirtyLogInvalid";
  constructor(message: string) {
    super(message);
    this.name = "DirtyLogError";
  }
}

/** Where the log of `replica` at `epoch` lives in `dir`. */
export function dirtyLogPath(dir: string, replica: string, epoch: number): string {
  return join(dir, `${replica}.${epoch}.bitmap`);
}

/** Delete the logs in `dir` of epochs older than `epoch`: they describe another writer's past. */
export async function removeStaleLogs(dir: string, epoch: number): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const removed: string[] = [];
  for (const name of names) {
    // Dirty logs, and the checkpoints of full copies (copy-checkpoint.ts).
    const m = /^(.+)\.(\d+)\.(bitmap|copied)$/.exec(name);
    if (!m || Number(m[2]) >= epoch) continue;
    await rm(join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}

export class DirtyLog {
  readonly path: string;
  readonly size: number;
  readonly granularity: number;
  readonly #bits: Buffer;
  readonly #fh: FileHandle;
  #count = 0;
  /** Bitmap bytes changed since the last flush started: [first, last]. */
  #lo = Infinity;
  #hi = -1;
  /** The flush writing now, and the one that will start after it. */
  #running: Promise<void> | undefined;
  #next: Promise<void> | undefined;
  #closed = false;

  private constructor(
    path: string,
    size: number,
    granularity: number,
    fh: FileHandle,
    bits: Buffer,
  ) {
    this.path = path;
    this.size = size;
    this.granularity = granularity;
    this.#fh = fh;
    this.#bits = bits;
    for (const byte of bits) this.#count += popcount(byte);
  }

  /** Open the log at `path`, creating it (and its directory) empty when absent. */
  static async open(
    path: string,
    size: number,
    granularity = DEFAULT_GRANULARITY,
  ): Promise<DirtyLog> {
    return (await DirtyLog.#open(path, size, granularity, true))!;
  }

  /** Open the log at `path` if it exists; undefined when it does not. */
  static async find(
    path: string,
    size: number,
    granularity = DEFAULT_GRANULARITY,
  ): Promise<DirtyLog | undefined> {
    return DirtyLog.#open(path, size, granularity, false);
  }

  static async #open(
    path: string,
    size: number,
    granularity: number,
    create: boolean,
  ): Promise<DirtyLog | undefined> {
    const pow2 = (granularity & (granularity - 1)) === 0;
    if (!Number.isSafeInteger(granularity) || granularity < MIN_GRANULARITY || !pow2) {
      throw new DirtyLogError(
        `granularity must be a power of two of at least ${MIN_GRANULARITY}, got ${granularity}`,
      );
    }
    if (!Number.isSafeInteger(size) || size < 0) throw new DirtyLogError(`invalid size ${size}`);
    const bytes = Math.ceil(Math.ceil(size / granularity) / 8);
    let fh: FileHandle;
    try {
      fh = await open(path, "r+");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      if (!create) return undefined;
      return DirtyLog.#create(path, size, granularity, bytes);
    }
    try {
      const buf = await fh.readFile();
      const bits = Buffer.alloc(bytes);
      const valid =
        buf.length === HEADER + bytes &&
        buf.subarray(0, 8).equals(MAGIC) &&
        buf.readUInt32LE(8) === Math.log2(granularity) &&
        buf.readDoubleLE(16) === size;
      const log = new DirtyLog(path, size, granularity, fh, bits);
      if (valid) {
        buf.copy(bits, 0, HEADER);
        log.#count = 0;
        for (const byte of bits) log.#count += popcount(byte);
      } else {
        // Unreadable as this volume's log: everything counts as missed.
        log.#setBits(0, size);
        await log.#writeAll();
      }
      return log;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  static async #create(
    path: string,
    size: number,
    granularity: number,
    bytes: number,
  ): Promise<DirtyLog> {
    const dir = dirname(path);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const fh = await open(path, "wx+", 0o600);
    const log = new DirtyLog(path, size, granularity, fh, Buffer.alloc(bytes));
    await log.#writeAll();
    // The new name must survive a crash too, or the restart finds no log.
    const dh = await open(dir, "r");
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
    return log;
  }

  /** Bytes covered by set bits (the last granule clipped to the size). */
  get dirtyBytes(): number {
    if (this.#count === 0) return 0;
    const lastBit = Math.ceil(this.size / this.granularity) - 1;
    const tail = this.#isSet(lastBit) ? (lastBit + 1) * this.granularity - this.size : 0;
    return this.#count * this.granularity - tail;
  }

  /** Record [offset, offset+length) as missed; resolves once that is on disk. */
  mark(offset: number, length: number): Promise<void> {
    if (this.#closed) return Promise.reject(new DirtyLogError(`dirty log ${this.path} is closed`));
    if (length <= 0) return this.#durable();
    this.#setBits(offset, offset + length);
    return this.#durable();
  }

  /** The dirty ranges, merged, in order. */
  *regions(): Iterable<DirtyRegion> {
    const bits = Math.ceil(this.size / this.granularity);
    let run = -1;
    for (let i = 0; i <= bits; i++) {
      const set = i < bits && this.#isSet(i);
      if (set && run < 0) run = i;
      if (!set && run >= 0) {
        const offset = run * this.granularity;
        yield { offset, length: Math.min(i * this.granularity, this.size) - offset };
        run = -1;
      }
      // Skip zero bytes quickly: a mostly clean 8 TiB map is 8M bits.
      if (!set && run < 0 && (i & 7) === 0 && i + 8 <= bits && this.#bits[i >> 3] === 0) i += 7;
    }
  }

  /** Forget every mark, durably. */
  async clear(): Promise<void> {
    this.#bits.fill(0);
    this.#count = 0;
    this.#lo = 0;
    this.#hi = this.#bits.length - 1;
    await this.#durable();
  }

  /** Close the file, keeping it (a restart picks it up). */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#settle();
    this.#closed = true;
    await this.#fh.close();
  }

  /** Close and delete the file: the replica has caught up (or is gone). */
  async remove(): Promise<void> {
    await this.close();
    await rm(this.path, { force: true });
  }

  #isSet(bit: number): boolean {
    return ((this.#bits[bit >> 3] ?? 0) & (1 << (bit & 7))) !== 0;
  }

  #setBits(start: number, end: number): void {
    const first = Math.floor(start / this.granularity);
    const bits = Math.ceil(this.size / this.granularity);
    const last = Math.min(Math.ceil(end / this.granularity), bits) - 1;
    for (let bit = first; bit <= last; bit++) {
      const i = bit >> 3;
      const mask = 1 << (bit & 7);
      const byte = this.#bits[i]!;
      if ((byte & mask) !== 0) continue;
      this.#bits[i] = byte | mask;
      this.#count++;
      if (i < this.#lo) this.#lo = i;
      if (i > this.#hi) this.#hi = i;
    }
  }

  /**
   * Resolves once every bit set so far is on disk: at once when nothing is
   * pending, else with the flush that will carry the pending bytes.
   */
  #durable(): Promise<void> {
    if (this.#hi < 0) return this.#running ?? Promise.resolve();
    if (this.#running === undefined) {
      this.#running = this.#flush();
      return this.#running;
    }
    // A flush is writing already and may have passed our bytes: take the next one.
    this.#next ??= this.#running.then(
      () => this.#startNext(),
      () => this.#startNext(),
    );
    return this.#next;
  }

  #startNext(): Promise<void> {
    this.#next = undefined;
    this.#running = this.#flush();
    return this.#running;
  }

  async #flush(): Promise<void> {
    const lo = this.#lo;
    const hi = this.#hi;
    this.#lo = Infinity;
    this.#hi = -1;
    try {
      await this.#fh.write(this.#bits, lo, hi - lo + 1, HEADER + lo);
      await this.#fh.datasync();
    } catch (err) {
      // Not on disk: the next flush must write these bytes again.
      this.#lo = Math.min(this.#lo, lo);
      this.#hi = Math.max(this.#hi, hi);
      throw err;
    } finally {
      this.#running = undefined;
    }
  }

  async #writeAll(): Promise<void> {
    const header = Buffer.alloc(HEADER);
    MAGIC.copy(header);
    header.writeUInt32LE(Math.log2(this.granularity), 8);
    header.writeDoubleLE(this.size, 16);
    await this.#fh.write(header, 0, HEADER, 0);
    await this.#fh.write(this.#bits, 0, this.#bits.length, HEADER);
    await this.#fh.truncate(HEADER + this.#bits.length);
    await this.#fh.sync();
    this.#lo = Infinity;
    this.#hi = -1;
  }

  async #settle(): Promise<void> {
    while (this.#running !== undefined || this.#next !== undefined) {
      await (this.#next ?? this.#running)?.catch(() => {});
    }
  }
}

function popcount(byte: number): number {
  let n = 0;
  for (let b = byte; b !== 0; b &= b - 1) n++;
  return n;
}
