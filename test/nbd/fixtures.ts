/**
 * Test fixtures for the NBD server: a server on a unix socket in a temp dir,
 * and small BlockDevice wrappers over a real MemoryBackend that record calls,
 * hold them at a gate the test opens, or fail them with a BlockError.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import {
  type BlockDevice,
  BlockError,
  type Errno,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from "../../agent/nbd/device.ts";
import type { Logger } from "../../agent/nbd/logger.ts";
import { type ExportSpec, NbdServer, type NbdServerOptions } from "../../agent/nbd/server.ts";
import { RawClient } from "./raw-client.ts";

export interface TestServer {
  server: NbdServer;
  socket: string;
  connect(): Promise<RawClient>;
  close(): Promise<void>;
}

export async function startServer(
  exports: Record<string, ExportSpec>,
  opts: Omit<NbdServerOptions, "exports"> = {},
): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-nbd-test-"));
  const socket = join(dir, "nbd.sock");
  const server = new NbdServer({ ...opts, exports });
  await server.listen({ unix: socket });
  return {
    server,
    socket,
    connect: () => RawClient.connect(socket),
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Holes at 64 KiB granularity (not the 1 MiB default), which the hole expectations are written for. */
export function memory(size = 1 << 20): MemoryBackend {
  return new MemoryBackend({ chunkSize: 64 * 1024, size });
}

export interface Call {
  op: string;
  offset: number;
  length: number;
  opts?: WriteOptions | ZeroOptions | undefined;
  into?: boolean;
}

/**
 * Records every call, can hold calls matching a predicate until `release()`,
 * and can fail calls matching another with a BlockError.
 */
export class ProbeDevice implements BlockDevice {
  readonly calls: Call[] = [];
  readonly inner: BlockDevice;
  #holdIf: ((c: Call) => boolean) | undefined;
  #failIf: ((c: Call) => Errno | undefined) | undefined;
  #gate: Promise<void> = Promise.resolve();
  #open: () => void = () => {};
  #waiters: { n: number; resolve: () => void }[] = [];
  held = 0;
  maxConcurrent = 0;
  #active = 0;

  constructor(inner: BlockDevice) {
    this.inner = inner;
  }

  get size() {
    return this.inner.size;
  }
  get readOnly() {
    return this.inner.readOnly;
  }
  get blockSizes() {
    return this.inner.blockSizes;
  }
  get canMultiConn() {
    return this.inner.canMultiConn;
  }

  /** Hold matching calls until `release()`. */
  hold(pred: (c: Call) => boolean): void {
    this.#holdIf = pred;
    this.#gate = new Promise((r) => {
      this.#open = r;
    });
  }

  release(): void {
    this.#holdIf = undefined;
    this.#open();
  }

  failWith(pred: (c: Call) => Errno | undefined): void {
    this.#failIf = pred;
  }

  /** Resolves once `n` calls have been held at the gate. */
  heldAtLeast(n: number): Promise<void> {
    if (this.held >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  async #run<T>(call: Call, fn: () => Promise<T>): Promise<T> {
    this.calls.push(call);
    this.#active++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.#active);
    try {
      if (this.#holdIf?.(call)) {
        this.held++;
        for (const w of this.#waiters.filter((x) => this.held >= x.n)) w.resolve();
        await this.#gate;
      }
      const errno = this.#failIf?.(call);
      if (errno) throw new BlockError(errno, `injected ${errno} on ${call.op}`);
      return await fn();
    } finally {
      this.#active--;
    }
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.#run({ op: "read", offset, length, into: into !== undefined }, () =>
      this.inner.read(offset, length),
    );
  }
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    // Copy now: the server lends `data` only until this call settles.
    const copy = Buffer.from(data);
    return this.#run({ op: "write", offset, length: data.length, opts }, () =>
      this.inner.write(offset, copy, opts),
    );
  }
  flush(): Promise<void> {
    return this.#run({ op: "flush", offset: 0, length: 0 }, () => this.inner.flush());
  }
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#run({ op: "trim", offset, length, opts }, () =>
      this.inner.trim(offset, length, opts),
    );
  }
  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#run({ op: "writeZeroes", offset, length, opts }, () =>
      this.inner.writeZeroes(offset, length, opts),
    );
  }
  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#run({ op: "blockStatus", offset, length }, () =>
      this.inner.blockStatus(offset, length),
    );
  }
  cache(offset: number, length: number): Promise<void> {
    return this.#run({ op: "cache", offset, length }, () => this.inner.cache(offset, length));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A logger that keeps records, and lets a test wait for a message to be logged. */
export class RecordingLogger implements Logger {
  readonly records: { level: string; obj: object; msg: string }[] = [];
  #waiters: { seen: () => boolean; resolve: () => void }[] = [];

  debug(obj: object, msg = ""): void {
    this.#add("debug", obj, msg);
  }
  info(obj: object, msg = ""): void {
    this.#add("info", obj, msg);
  }
  warn(obj: object, msg = ""): void {
    this.#add("warn", obj, msg);
  }
  error(obj: object, msg = ""): void {
    this.#add("error", obj, msg);
  }

  /** Resolves when `times` records whose message contains `match` have been logged. */
  logged(match: string, times = 1): Promise<void> {
    const seen = () => this.records.filter((r) => r.msg.includes(match)).length >= times;
    if (seen()) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ seen, resolve }));
  }

  #add(level: string, obj: object, msg: string): void {
    this.records.push({ level, obj, msg });
    for (const w of this.#waiters.filter((x) => x.seen())) w.resolve();
  }
}

/** A buffer of `n` bytes with a recognisable pattern derived from `seed`. */
export function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}
