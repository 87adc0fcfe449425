/**
 * The client side of one NBD connection, as the fuse relay (relay.ts) needs
 * it towards the agent's export: fixed newstyle, NBD_OPT_GO with the block
 * size info, then simple replies only (no structured replies, no metadata
 * contexts: the relay never asks for block status). Wire numbers come from
 * agent/nbd/protocol.ts, as the server's do.
 *
 * Requests are pipelined; replies are matched by handle and may come in
 * any order. When the connection ends, every request still unanswered is
 * reported through `closed` (and its promise rejects with LinkClosed): the
 * caller decides whether to send it again elsewhere.
 */
import { connect, type Socket } from "node:net";
import { ByteQueue } from "../nbd/byte-queue.ts";
import type { BlockSizes } from "../nbd/device.ts";
import {
  CMD,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  NBD_MAGIC,
  OPT,
  OPTION_REPLY_HEADER_SIZE,
  OPTION_REPLY_MAGIC,
  REP,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
} from "../nbd/protocol.ts";

/** What the server said about the export in NBD_OPT_GO. */
export interface LinkExport {
  size: number;
  /** Transmission flags (TX.*). */
  flags: number;
  /** Advertised block sizes, or undefined when the server sent none. */
  blockSizes: BlockSizes | undefined;
}

/** The answer to one request: 0 or an NBD error value, and the data of a successful read. */
export interface LinkReply {
  error: number;
  data?: Buffer;
}

/** The connection ended (or failed) before the request was answered. */
export class LinkClosed extends Error {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, opts);
    this.name = "LinkClosed";
  }
}

interface Outstanding {
  type: number;
  length: number;
  resolve(reply: LinkReply): void;
  reject(err: Error): void;
}

/** Option replies are short (names, block sizes); a longer one is a confused server. */
const MAX_OPTION_REPLY = 64 * 1024;

export class NbdLink {
  readonly export: LinkExport;
  /** Resolves once, with why, when the connection has ended. */
  readonly closed: Promise<Error>;
  readonly #socket: Socket;
  readonly #reader: ByteReader;
  readonly #outstanding = new Map<bigint, Outstanding>();
  #nextHandle = 1n;
  #ended: Error | undefined;

  private constructor(socket: Socket, reader: ByteReader, info: LinkExport) {
    this.#socket = socket;
    this.#reader = reader;
    this.export = info;
    this.closed = new Promise((resolve) => {
      const end = (why: Error) => {
        if (this.#ended) return;
        this.#ended = why;
        for (const o of this.#outstanding.values()) o.reject(why);
        this.#outstanding.clear();
        resolve(why);
      };
      socket.on("close", () => end(new LinkClosed("the server closed the connection")));
      socket.on("error", (err) => end(new LinkClosed(`connection failed: ${err.message}`, { cause: err })));
      reader.failed = (err) => {
        end(err);
        socket.destroy();
      };
    });
    void this.#receive();
  }

  /**
   * Connect to `socketPath`, select `exportName` with NBD_OPT_GO, and enter
   * transmission. Rejects when nobody listens, the export is unknown or
   * refused, or the handshake does not finish within `timeoutMs`.
   */
  static async connect(socketPath: string, exportName: string, timeoutMs = 10_000): Promise<NbdLink> {
    const socket = connect({ path: socketPath });
    const reader = new ByteReader(socket);
    const timer = setTimeout(() => socket.destroy(new Error(`no handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      });
      const info = await handshake(socket, reader, exportName);
      return new NbdLink(socket, reader, info);
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether the connection has ended. */
  get ended(): boolean {
    return this.#ended !== undefined;
  }

  /** Send one request; `payload` for NBD_CMD_WRITE only. Rejects with LinkClosed if the connection ends first. */
  request(type: number, flags: number, offset: number, length: number, payload?: Uint8Array): Promise<LinkReply> {
    if (this.#ended) return Promise.reject(this.#ended);
    const handle = this.#nextHandle++;
    const header = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    return new Promise<LinkReply>((resolve, reject) => {
      this.#outstanding.set(handle, { type, length, resolve, reject });
      this.#socket.write(header);
      if (payload) this.#socket.write(payload);
    });
  }

  /** Ask the server to end the connection (NBD_CMD_DISC) and close our side. */
  close(): void {
    if (this.#ended) return;
    const header = Buffer.alloc(REQUEST_HEADER_SIZE);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(CMD.DISC, 6);
    this.#socket.end(header);
  }

  /** Cut the connection at once. */
  destroy(): void {
    this.#socket.destroy();
  }

  async #receive(): Promise<void> {
    try {
      for (;;) {
        const head = await this.#reader.read(SIMPLE_REPLY_SIZE);
        if (head.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
          throw new LinkClosed(`bad reply magic 0x${head.readUInt32BE(0).toString(16)}`);
        }
        const error = head.readUInt32BE(4);
        const handle = head.readBigUInt64BE(8);
        const o = this.#outstanding.get(handle);
        if (!o) throw new LinkClosed(`reply to unknown handle ${handle}`);
        this.#outstanding.delete(handle);
        // A simple reply carries read data only when the read succeeded.
        if (o.type === CMD.READ && error === 0) o.resolve({ error, data: await this.#reader.read(o.length) });
        else o.resolve({ error });
      }
    } catch (err) {
      this.#reader.failed?.(err instanceof LinkClosed ? err : new LinkClosed(String(err), { cause: err }));
    }
  }
}

/** The handshake up to transmission: the export's size, flags and block sizes. */
async function handshake(socket: Socket, reader: ByteReader, exportName: string): Promise<LinkExport> {
  const greeting = await reader.read(18);
  if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
    throw new Error("not an NBD server speaking newstyle");
  }
  const serverFlags = greeting.readUInt16BE(16);
  if ((serverFlags & FLAG_FIXED_NEWSTYLE) === 0) throw new Error("the server does not speak fixed newstyle");
  const clientFlags = Buffer.allocUnsafe(4);
  clientFlags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES ? FLAG_C_NO_ZEROES : 0));
  socket.write(clientFlags);

  const name = Buffer.from(exportName, "utf8");
  const data = Buffer.allocUnsafe(4 + name.length + 2 + 2);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  data.writeUInt16BE(1, 4 + name.length);
  data.writeUInt16BE(INFO.BLOCK_SIZE, 6 + name.length);
  const option = Buffer.allocUnsafe(16);
  option.writeBigUInt64BE(IHAVEOPT, 0);
  option.writeUInt32BE(OPT.GO, 8);
  option.writeUInt32BE(data.length, 12);
  socket.write(Buffer.concat([option, data]));

  let size: number | undefined;
  let flags = 0;
  let blockSizes: BlockSizes | undefined;
  for (;;) {
    const head = await reader.read(OPTION_REPLY_HEADER_SIZE);
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error("bad option reply magic");
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (length > MAX_OPTION_REPLY) throw new Error(`option reply of ${length} bytes`);
    const payload = await reader.read(length);
    if (type === REP.ACK) break;
    if (type >= 0x80000000) {
      throw new Error(`the server refused export ${JSON.stringify(exportName)}: ${payload.toString("utf8") || `error 0x${type.toString(16)}`}`);
    }
    if (type !== REP.INFO || payload.length < 2) continue;
    const info = payload.readUInt16BE(0);
    if (info === INFO.EXPORT && payload.length >= 12) {
      size = Number(payload.readBigUInt64BE(2));
      flags = payload.readUInt16BE(10);
    } else if (info === INFO.BLOCK_SIZE && payload.length >= 14) {
      blockSizes = { minimum: payload.readUInt32BE(2), preferred: payload.readUInt32BE(6), maximum: payload.readUInt32BE(10) };
    }
  }
  if (size === undefined) throw new Error("the server sent no export size");
  return { size, flags, blockSizes };
}

/** Exactly-n-bytes reads over a socket's 'data' events, off the server's ByteQueue (a view when one chunk holds them). */
class ByteReader {
  failed: ((err: Error) => void) | undefined;
  readonly #queue = new ByteQueue();
  #want: { n: number; resolve(b: Buffer): void; reject(e: Error): void } | undefined;
  #ended: Error | undefined;

  constructor(socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.#queue.push(chunk);
      this.#serve();
    });
    const end = (err: Error) => {
      this.#ended ??= err;
      const want = this.#want;
      this.#want = undefined;
      want?.reject(this.#ended);
    };
    socket.on("close", () => end(new LinkClosed("the server closed the connection")));
    socket.on("error", (err) => end(new LinkClosed(`connection failed: ${err.message}`, { cause: err })));
  }

  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#want = { n, resolve, reject };
      this.#serve();
      if (this.#want && this.#ended) {
        this.#want = undefined;
        reject(this.#ended);
      }
    });
  }

  #serve(): void {
    const want = this.#want;
    if (!want || this.#queue.length < want.n) return;
    this.#want = undefined;
    want.resolve(this.#queue.take(want.n));
  }
}
