/**
 * A deliberately small NBD client for protocol tests: it speaks the wire
 * format byte by byte (its framing written from the spec, sharing no
 * encoding or parsing with the server) so tests can send exactly the good or
 * bad bytes they want. Magics, commands, options and info types come from
 * protocol.ts: the real clients of test/interop fail on a wrong one. Command
 * flags, option reply types and errno values are written out here, since
 * only these tests check them against the spec.
 */
import { connect, type Socket } from "node:net";
import {
  CMD,
  IHAVEOPT,
  INFO,
  NBD_MAGIC,
  OPT,
  OPTION_REPLY_MAGIC,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from "../../agent/nbd/protocol.ts";

export { CMD, INFO, OPT };

export const MAGIC = {
  NBD: NBD_MAGIC,
  IHAVEOPT,
  OPTION_REPLY: OPTION_REPLY_MAGIC,
  REQUEST: REQUEST_MAGIC,
  SIMPLE: SIMPLE_REPLY_MAGIC,
  STRUCTURED: STRUCTURED_REPLY_MAGIC,
};

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_TOO_BIG: 0x80000009,
};

export const FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 };

export const ERR = {
  EPERM: 1,
  EIO: 5,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
};

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Chunk {
  flags: number;
  type: number;
  handle: bigint;
  payload: Buffer;
}

/** A whole reply: a simple reply, or every structured chunk up to DONE. */
export interface Reply {
  handle: bigint;
  error: number;
  /** Read data (simple reply) or the data of OFFSET_DATA chunks, in offset order. */
  data?: Buffer;
  chunks: Chunk[];
  structured: boolean;
}

export interface RequestSpec {
  type: number;
  handle: bigint;
  offset?: number;
  length?: number;
  flags?: number;
  payload?: Buffer;
}

export class RawClient {
  readonly socket: Socket;
  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;
  #buf = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | undefined;
  /** Read lengths by handle, needed to frame simple read replies. */
  #readLengths = new Map<bigint, number>();
  /** Chunks of structured replies still waiting for their DONE. */
  #partial = new Map<bigint, Chunk[]>();
  structured = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#wake?.();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.#ended = true;
        this.#wake?.();
        resolve();
      }),
    );
  }

  /** Connect to a unix socket path, or to TCP `{ host, port }`. */
  static connect(to: string | { host: string; port: number }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = typeof to === "string" ? connect({ path: to }) : connect(to);
      socket.once("connect", () => resolve(new RawClient(socket)));
      socket.once("error", reject);
    });
  }

  /** Exactly `n` bytes; rejects if the server closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.#ended) throw new Error(`connection closed with ${this.#buf.length}/${n} bytes`);
      await new Promise<void>((r) => {
        this.#wake = r;
      });
      this.#wake = undefined;
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** Bytes the server sent after closing, or none: resolves once closed. */
  async drainToClose(): Promise<Buffer> {
    await this.closed;
    return this.#buf;
  }

  // --- handshake -----------------------------------------------------------

  /** Read the 18-byte greeting and answer with client flags. */
  async greet(clientFlags = 3): Promise<{ handshakeFlags: number }> {
    const g = await this.read(18);
    if (g.readBigUInt64BE(0) !== MAGIC.NBD || g.readBigUInt64BE(8) !== MAGIC.IHAVEOPT) {
      throw new Error("bad greeting");
    }
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags >>> 0);
    this.write(flags);
    return { handshakeFlags: g.readUInt16BE(16) };
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), declaredLength = data.length): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(MAGIC.IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(declaredLength, 12);
    this.write(Buffer.concat([h, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== MAGIC.OPTION_REPLY) throw new Error("bad option reply magic");
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(length) };
  }

  /** Replies to one option up to and including the final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.type === REP.ACK || r.type >= 0x80000000) return out;
    }
  }

  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    return this.optionReplies();
  }

  /** NBD_OPT_STRUCTURED_REPLY; returns the reply type. */
  async negotiateStructured(): Promise<number> {
    const [r] = await this.option(OPT.STRUCTURED_REPLY);
    if (r!.type === REP.ACK) this.structured = true;
    return r!.type;
  }

  /** NBD_OPT_SET_META_CONTEXT; returns the context ids and names granted, and the final type. */
  async setMetaContext(
    name: string,
    queries: string[],
    option: number = OPT.SET_META_CONTEXT,
  ): Promise<{ contexts: { id: number; name: string }[]; final: number }> {
    const replies = await this.option(option, metaContextData(name, queries));
    const contexts = replies
      .filter((r) => r.type === REP.META_CONTEXT)
      .map((r) => ({ id: r.data.readUInt32BE(0), name: r.data.toString("utf8", 4) }));
    return { contexts, final: replies[replies.length - 1]!.type };
  }

  /** NBD_OPT_GO (or INFO); on success returns the export info. */
  async go(
    name: string,
    infos: number[] = [],
    option: number = OPT.GO,
  ): Promise<{ final: number; size?: number; flags?: number; replies: OptionReply[] }> {
    const replies = await this.option(option, infoData(name, infos));
    const exp = replies.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === 0);
    return {
      final: replies[replies.length - 1]!.type,
      replies,
      ...(exp
        ? { size: Number(exp.data.readBigUInt64BE(2)), flags: exp.data.readUInt16BE(10) }
        : {}),
    };
  }

  /** Fixed newstyle handshake straight to transmission. */
  async handshake(
    name = "",
    opts: { structured?: boolean; meta?: boolean } = {},
  ): Promise<{ size: number; flags: number; contextId?: number }> {
    await this.greet();
    let contextId: number | undefined;
    if (opts.structured || opts.meta) {
      if ((await this.negotiateStructured()) !== REP.ACK) throw new Error("no structured replies");
    }
    if (opts.meta) {
      const { contexts } = await this.setMetaContext(name, ["base:allocation"]);
      contextId = contexts[0]?.id;
    }
    const r = await this.go(name);
    if (r.final !== REP.ACK) throw new Error(`GO failed with 0x${r.final.toString(16)}`);
    return { size: r.size!, flags: r.flags!, ...(contextId !== undefined ? { contextId } : {}) };
  }

  // --- transmission --------------------------------------------------------

  send(req: RequestSpec): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(MAGIC.REQUEST, 0);
    h.writeUInt16BE(req.flags ?? 0, 4);
    h.writeUInt16BE(req.type, 6);
    h.writeBigUInt64BE(req.handle, 8);
    h.writeBigUInt64BE(BigInt(req.offset ?? 0), 16);
    h.writeUInt32BE(req.length ?? req.payload?.length ?? 0, 24);
    if (req.type === CMD.READ) this.#readLengths.set(req.handle, req.length ?? 0);
    this.write(req.payload ? Buffer.concat([h, req.payload]) : h);
  }

  /** Read one complete reply (whichever request it answers). */
  async reply(): Promise<Reply> {
    for (;;) {
      const magic = (await this.read(4)).readUInt32BE(0);
      if (magic === MAGIC.SIMPLE) {
        const rest = await this.read(12);
        const error = rest.readUInt32BE(0);
        const handle = rest.readBigUInt64BE(4);
        const length = this.#readLengths.get(handle);
        this.#readLengths.delete(handle);
        const data = length !== undefined && error === 0 ? await this.read(length) : undefined;
        return { handle, error, chunks: [], structured: false, ...(data ? { data } : {}) };
      }
      if (magic !== MAGIC.STRUCTURED) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
      const rest = await this.read(16);
      const chunk: Chunk = {
        flags: rest.readUInt16BE(0),
        type: rest.readUInt16BE(2),
        handle: rest.readBigUInt64BE(4),
        payload: await this.read(rest.readUInt32BE(12)),
      };
      const chunks = [...(this.#partial.get(chunk.handle) ?? []), chunk];
      if ((chunk.flags & 1) === 0) {
        this.#partial.set(chunk.handle, chunks);
        continue;
      }
      this.#partial.delete(chunk.handle);
      this.#readLengths.delete(chunk.handle);
      return assemble(chunk.handle, chunks);
    }
  }

  /** Send one request and wait for its reply (nothing else may be in flight). */
  async request(req: RequestSpec): Promise<Reply> {
    this.send(req);
    const r = await this.reply();
    if (r.handle !== req.handle) throw new Error(`reply for ${r.handle}, expected ${req.handle}`);
    return r;
  }

  close(): void {
    this.socket.destroy();
  }
}

function assemble(handle: bigint, chunks: Chunk[]): Reply {
  let error = 0;
  const pieces: { offset: number; data: Buffer }[] = [];
  for (const c of chunks) {
    if (c.type & 0x8000) error = c.payload.readUInt32BE(0);
    else if (c.type === 1) {
      pieces.push({ offset: Number(c.payload.readBigUInt64BE(0)), data: c.payload.subarray(8) });
    } else if (c.type === 2) {
      const offset = Number(c.payload.readBigUInt64BE(0));
      pieces.push({ offset, data: Buffer.alloc(c.payload.readUInt32BE(8)) });
    }
  }
  pieces.sort((a, b) => a.offset - b.offset);
  const data = pieces.length > 0 ? Buffer.concat(pieces.map((p) => p.data)) : undefined;
  return { handle, error, chunks, structured: true, ...(data ? { data } : {}) };
}

/** Message text of an error chunk. */
export function errorMessage(reply: Reply): string {
  const c = reply.chunks.find((x) => x.type & 0x8000);
  return c ? c.payload.toString("utf8", 6, 6 + c.payload.readUInt16BE(4)) : "";
}

/** base:allocation descriptors of a BLOCK_STATUS reply. */
export function descriptors(reply: Reply): { contextId: number; extents: [number, number][] } {
  const c = reply.chunks.find((x) => x.type === 5);
  if (!c) throw new Error("no block status chunk");
  const extents: [number, number][] = [];
  for (let at = 4; at < c.payload.length; at += 8) {
    extents.push([c.payload.readUInt32BE(at), c.payload.readUInt32BE(at + 4)]);
  }
  return { contextId: c.payload.readUInt32BE(0), extents };
}

export function infoData(name: string, infos: number[]): Buffer {
  const n = Buffer.from(name, "utf8");
  const out = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  out.writeUInt32BE(n.length, 0);
  n.copy(out, 4);
  out.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => {
    out.writeUInt16BE(t, 4 + n.length + 2 + 2 * i);
  });
  return out;
}

export function metaContextData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    return b;
  };
  const n = Buffer.from(name, "utf8");
  parts.push(u32(n.length), n, u32(queries.length));
  for (const q of queries) {
    const qb = Buffer.from(q, "utf8");
    parts.push(u32(qb.length), qb);
  }
  return Buffer.concat(parts);
}
