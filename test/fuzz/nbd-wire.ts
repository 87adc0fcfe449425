/**
 * NBD bytes for the fuzzer, written from the protocol spec and sharing no
 * code with the server: encoders that will write any value into any field
 * (wrong lengths, unknown codes, offsets past 2^63), and a checker for the
 * replies to a session whose every byte was well framed.
 *
 * Magics and codes come from protocol.ts: a wrong one would only make the
 * fuzzer weaker, and test/interop's real clients catch a wrong one there.
 */
import {
  CMD,
  IHAVEOPT,
  NBD_MAGIC,
  OPTION_REPLY_MAGIC,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from "../../agent/nbd/protocol.ts";

export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v & 0xffff);
  return b;
}

export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

export function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, v));
  return b;
}

/** An option: IHAVEOPT, code, the length it claims (the real one unless told), data. */
export function option(code: number, data: Buffer = Buffer.alloc(0), declared = data.length): Buffer {
  return Buffer.concat([u64(IHAVEOPT), u32(code), u32(declared), data]);
}

/** NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count of info items, items. */
export function goData(name: Buffer, infos: readonly number[] = []): Buffer {
  return Buffer.concat([u32(name.length), name, u16(infos.length), ...infos.map(u16)]);
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT data: name, count of queries, queries. */
export function metaData(name: Buffer, queries: readonly Buffer[]): Buffer {
  return Buffer.concat([
    u32(name.length),
    name,
    u32(queries.length),
    ...queries.flatMap((q) => [u32(q.length), q]),
  ]);
}

export interface RequestFields {
  type: number;
  flags?: number;
  handle: bigint;
  offset?: bigint;
  /** What the header claims; the payload's length unless told. */
  length?: number;
  payload?: Buffer;
  magic?: number;
}

/** A transmission request header, and the payload when there is one. */
export function request(f: RequestFields): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE((f.magic ?? REQUEST_MAGIC) >>> 0, 0);
  h.writeUInt16BE((f.flags ?? 0) & 0xffff, 4);
  h.writeUInt16BE(f.type & 0xffff, 6);
  h.writeBigUInt64BE(BigInt.asUintN(64, f.handle), 8);
  h.writeBigUInt64BE(BigInt.asUintN(64, f.offset ?? 0n), 16);
  h.writeUInt32BE((f.length ?? f.payload?.length ?? 0) >>> 0, 24);
  return f.payload ? Buffer.concat([h, f.payload]) : h;
}

/** One request of a well-framed session, as the checker needs to know it. */
export interface SentRequest {
  type: number;
  offset: number;
  length: number;
}

/** What a well-framed session sent, so that its replies can be judged. */
export interface WellFramed {
  /** The options sent before transmission, in order; each must end in ACK. */
  options: number[];
  structured: boolean;
  /** Requests by handle; DISC (which has no reply) is not among them. */
  requests: Map<bigint, SentRequest>;
  /** The export is read-only: every write, trim and zeroing must fail. */
  readOnly: boolean;
  /** The export's bytes, when they are known and nobody changes them: read data must match. */
  contents?: Buffer;
}

const REP_ACK = 1;
const REPLY_FLAG_DONE = 1;
const REPLY_TYPE_OFFSET_DATA = 1;
const REPLY_TYPE_OFFSET_HOLE = 2;
const WRITES = new Set<number>([CMD.WRITE, CMD.TRIM, CMD.WRITE_ZEROES]);

/**
 * Judge every byte the server sent on a well-framed session that ended
 * with DISC: the greeting, one complete answer to each option, then
 * exactly one reply to each request, read data of the right length (and
 * the right bytes where they are known), nothing left over. Returns what
 * was wrong, or undefined.
 */
export function checkReplies(bytes: Buffer, sent: WellFramed): string | undefined {
  const r = new Cursor(bytes);
  const answered = new Set<bigint>();
  try {
    if (r.u64() !== NBD_MAGIC || r.u64() !== IHAVEOPT) return "bad greeting";
    r.take(2);
    for (const code of sent.options) {
      for (;;) {
        if (r.u64() !== OPTION_REPLY_MAGIC) return `bad option reply magic for option ${code}`;
        const opt = r.u32();
        const type = r.u32();
        r.take(r.u32());
        if (opt !== code) return `option reply for ${opt} while answering ${code}`;
        if (type === REP_ACK) break;
        if (type >= 0x80000000) return `option ${code} refused (0x${type.toString(16)}) on a valid handshake`;
      }
    }
    const partial = new Map<bigint, { data: number; holes: Buffer[]; error: number; chunks: Buffer[] }>();
    while (answered.size < sent.requests.size) {
      const magic = r.u32();
      if (magic === SIMPLE_REPLY_MAGIC) {
        const error = r.u32();
        const handle = r.u64();
        const req = sent.requests.get(handle);
        if (!req) return `simple reply for unknown handle ${handle}`;
        if (answered.has(handle) || partial.has(handle)) return `second reply for handle ${handle}`;
        answered.add(handle);
        const data = req.type === CMD.READ && error === 0 ? r.take(req.length) : undefined;
        const wrong = judge(sent, req, error, data);
        if (wrong) return `handle ${handle}: ${wrong}`;
        continue;
      }
      if (magic !== STRUCTURED_REPLY_MAGIC) return `bad reply magic 0x${magic.toString(16)}`;
      if (!sent.structured) return "structured reply on a session that did not negotiate them";
      const flags = r.u16();
      const type = r.u16();
      const handle = r.u64();
      const payload = r.take(r.u32());
      const req = sent.requests.get(handle);
      if (!req) return `structured reply for unknown handle ${handle}`;
      if (answered.has(handle)) return `chunk after the final one for handle ${handle}`;
      const state = partial.get(handle) ?? { data: 0, holes: [], error: 0, chunks: [] };
      partial.set(handle, state);
      if (type & 0x8000) state.error = payload.readUInt32BE(0);
      else if (type === REPLY_TYPE_OFFSET_DATA) {
        const at = Number(payload.readBigUInt64BE(0)) - req.offset;
        if (at < 0 || at + payload.length - 8 > req.length) return `handle ${handle}: data outside the read`;
        state.chunks.push(Buffer.concat([u32(at), payload.subarray(8)]));
        state.data += payload.length - 8;
      } else if (type === REPLY_TYPE_OFFSET_HOLE) {
        const at = Number(payload.readBigUInt64BE(0)) - req.offset;
        const n = payload.readUInt32BE(8);
        if (at < 0 || at + n > req.length) return `handle ${handle}: hole outside the read`;
        state.chunks.push(Buffer.concat([u32(at), Buffer.alloc(n)]));
        state.data += n;
      }
      if ((flags & REPLY_FLAG_DONE) === 0) continue;
      partial.delete(handle);
      answered.add(handle);
      let data: Buffer | undefined;
      if (req.type === CMD.READ && state.error === 0) {
        if (state.data !== req.length) return `handle ${handle}: ${state.data} bytes for a ${req.length}-byte read`;
        data = Buffer.alloc(req.length);
        for (const c of state.chunks) c.subarray(4).copy(data, c.readUInt32BE(0));
      }
      const wrong = judge(sent, req, state.error, data);
      if (wrong) return `handle ${handle}: ${wrong}`;
    }
    if (r.left > 0) return `${r.left} bytes after the last reply`;
    return undefined;
  } catch (err) {
    if (err instanceof Truncated) {
      const owed = sent.requests.size - answered.size;
      return `the server closed after ${bytes.length} bytes, owing replies to ${owed} requests (or the rest of the handshake)`;
    }
    throw err;
  }
}

function judge(sent: WellFramed, req: SentRequest, error: number, data: Buffer | undefined): string | undefined {
  if (sent.readOnly && WRITES.has(req.type) && error === 0) return "a write to a read-only export succeeded";
  if (data && sent.contents) {
    const want = sent.contents.subarray(req.offset, req.offset + req.length);
    if (!want.equals(data)) return `read ${req.offset}+${req.length} returned the wrong bytes`;
  }
  return undefined;
}

class Truncated extends Error {}

/** Reads big-endian fields off a buffer; throws Truncated past the end. */
class Cursor {
  readonly #buf: Buffer;
  #at = 0;
  constructor(buf: Buffer) {
    this.#buf = buf;
  }
  get left(): number {
    return this.#buf.length - this.#at;
  }
  take(n: number): Buffer {
    if (this.#at + n > this.#buf.length) throw new Truncated();
    const out = this.#buf.subarray(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }
  u16(): number {
    return this.take(2).readUInt16BE(0);
  }
  u32(): number {
    return this.take(4).readUInt32BE(0);
  }
  u64(): bigint {
    return this.take(8).readBigUInt64BE(0);
  }
}
