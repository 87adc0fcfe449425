/**
 * The handshake phase: fixed newstyle greeting, then option haggling until
 * the client picks an export (NBD_OPT_GO or NBD_OPT_EXPORT_NAME) or leaves.
 *
 * It talks through `HandshakeIo` rather than a socket so the same code runs
 * on any byte stream. Errors the protocol lets us report go back as option
 * error replies; violations it does not (bad magic, bad client flags) throw
 * `ProtocolViolation` and the caller drops the connection.
 */
import { type ExportCatalog, type NbdExport, transmissionFlags } from "./catalog.ts";
import {
  BASE_ALLOCATION,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  NBD_MAGIC,
  OPT,
  OPT_NAME,
  OPTION_HEADER_SIZE,
  REP,
} from "./protocol.ts";
import { optionError, optionReply, writeUInt64 } from "./replies.ts";
import { ConnectionRefused, ProtocolViolation } from "./violation.ts";

/** Byte stream the handshake runs over. */
export interface HandshakeIo {
  /** Resolve with exactly `n` bytes; reject with ConnectionClosed if the peer leaves first. */
  read(n: number): Promise<Buffer>;
  /** Discard the next `n` bytes without holding them in memory. */
  skip(n: number): Promise<void>;
  write(data: Uint8Array): void;
}

/** What the transmission phase needs from a successful handshake. */
export interface Session {
  readonly export: NbdExport;
  /** NBD_OPT_STRUCTURED_REPLY was acknowledged. */
  readonly structuredReplies: boolean;
  /** Context id of `base:allocation` if the client selected it for this export, else 0. */
  readonly metaContextId: number;
  /** Transmission flags as advertised to the client. */
  readonly flags: number;
}

/** How a handshake ended: in transmission, or with NBD_OPT_ABORT. */
export type Negotiated = { kind: "transmission"; session: Session } | { kind: "aborted" };

/** What option haggling consults on the server side. */
export interface NegotiationContext {
  catalog: ExportCatalog;
  /** True once the server is shutting down: options then get NBD_REP_ERR_SHUTDOWN. */
  shuttingDown(): boolean;
  /**
   * Why this connection is not served at all (the server has as many
   * connections as it allows), or undefined. Options then get
   * NBD_REP_ERR_POLICY with this reason.
   */
  refusal(): string | undefined;
  /**
   * Count this connection on `exp`, which it is about to enter transmission
   * with; the reason when the export has as many connections as it allows.
   */
  claim(exp: NbdExport): string | undefined;
}

/** Option payloads are names and short query lists; anything larger is refused. */
const MAX_OPTION_DATA = 64 * 1024;
/** A client that haggles this long is treated as a denial of service. */
const MAX_OPTIONS = 4096;
/** The id this server gives `base:allocation` in NBD_OPT_SET_META_CONTEXT. */
const BASE_ALLOCATION_ID = 1;

/** Run the handshake to completion. */
export async function negotiate(io: HandshakeIo, ctx: NegotiationContext): Promise<Negotiated> {
  const greeting = Buffer.allocUnsafe(18);
  greeting.writeBigUInt64BE(NBD_MAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  io.write(greeting);

  const clientFlags = (await io.read(4)).readUInt32BE(0);
  if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
    throw new ProtocolViolation(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const haggling = new Haggling(io, ctx, clientFlags);
  for (let count = 0; count < MAX_OPTIONS; count++) {
    const result = await haggling.next();
    if (result) return result;
  }
  throw new ProtocolViolation(`more than ${MAX_OPTIONS} options`);
}

/** State of one client's option haggling. */
class Haggling {
  readonly #io: HandshakeIo;
  readonly #ctx: NegotiationContext;
  readonly #fixed: boolean;
  readonly #noZeroes: boolean;
  #structured = false;
  /** Export for which `base:allocation` was selected by the last SET_META_CONTEXT. */
  #metaExport: NbdExport | undefined;

  constructor(io: HandshakeIo, ctx: NegotiationContext, clientFlags: number) {
    this.#io = io;
    this.#ctx = ctx;
    this.#fixed = (clientFlags & FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.#noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;
  }

  /** Read and answer one option; a result ends the handshake. */
  async next(): Promise<Negotiated | undefined> {
    const header = await this.#io.read(OPTION_HEADER_SIZE);
    if (header.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolViolation("bad option magic");
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);

    // A non-fixed newstyle client cannot parse option replies: the only
    // option it may send is EXPORT_NAME, and anything else ends the session.
    if (!this.#fixed && option !== OPT.EXPORT_NAME) {
      throw new ProtocolViolation(`non-fixed newstyle client sent option ${option}`);
    }
    if (length > MAX_OPTION_DATA) {
      if (option === OPT.EXPORT_NAME) throw new ProtocolViolation("export name too long");
      await this.#io.skip(length);
      this.#reply(option, REP.ERR_TOO_BIG, `option data of ${length} bytes is too large`);
      return undefined;
    }
    const data = await this.#io.read(length);
    if (this.#ctx.shuttingDown() && option !== OPT.ABORT) {
      if (option === OPT.EXPORT_NAME) throw new ProtocolViolation("server is shutting down");
      this.#reply(option, REP.ERR_SHUTDOWN, "server is shutting down");
      return undefined;
    }
    // A connection over the server's limit: every option is refused (the
    // spec has the server error options until the client gives up) and the
    // handshake timeout ends those that never do.
    const refused = option === OPT.ABORT ? undefined : this.#ctx.refusal();
    if (refused !== undefined) {
      if (option === OPT.EXPORT_NAME) throw new ConnectionRefused(refused);
      this.#reply(option, REP.ERR_POLICY, refused);
      return undefined;
    }

    switch (option) {
      case OPT.EXPORT_NAME:
        return this.#exportName(data);
      case OPT.ABORT:
        this.#io.write(optionReply(option, REP.ACK));
        return { kind: "aborted" };
      case OPT.LIST:
        this.#list(data);
        return undefined;
      case OPT.INFO:
      case OPT.GO:
        return this.#infoOrGo(option, data);
      case OPT.STRUCTURED_REPLY:
        if (data.length !== 0) this.#reply(option, REP.ERR_INVALID, "unexpected option data");
        else {
          this.#structured = true;
          this.#io.write(optionReply(option, REP.ACK));
        }
        return undefined;
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT:
        this.#metaContext(option, data);
        return undefined;
      case OPT.STARTTLS:
        this.#reply(option, REP.ERR_UNSUP, "TLS is not supported by this server");
        return undefined;
      case OPT.EXTENDED_HEADERS:
        this.#reply(option, REP.ERR_UNSUP, "extended headers are not supported");
        return undefined;
      default:
        this.#reply(option, REP.ERR_UNSUP, `unsupported option ${OPT_NAME[option] ?? option}`);
        return undefined;
    }
  }

  #reply(option: number, type: number, message: string): void {
    this.#io.write(optionError(option, type, message));
  }

  #session(exp: NbdExport): Session {
    return {
      export: exp,
      structuredReplies: this.#structured,
      metaContextId: this.#structured && this.#metaExport === exp ? BASE_ALLOCATION_ID : 0,
      flags: transmissionFlags(exp, this.#structured),
    };
  }

  /** NBD_OPT_EXPORT_NAME: cannot fail politely, so an unknown name or a full export ends the session. */
  #exportName(data: Buffer): Negotiated {
    const name = data.toString("utf8");
    const exp = this.#ctx.catalog.resolve(name);
    if (!exp) throw new ProtocolViolation(`unknown export ${JSON.stringify(name)}`);
    const full = this.#ctx.claim(exp);
    if (full !== undefined) throw new ConnectionRefused(full);
    const session = this.#session(exp);
    const reply = Buffer.alloc(10 + (this.#noZeroes ? 0 : 124));
    writeUInt64(reply, exp.device.size, 0);
    reply.writeUInt16BE(session.flags, 8);
    this.#io.write(reply);
    return { kind: "transmission", session };
  }

  #list(data: Buffer): void {
    if (data.length !== 0) {
      this.#reply(OPT.LIST, REP.ERR_INVALID, "NBD_OPT_LIST takes no data");
      return;
    }
    for (const exp of this.#ctx.catalog.list()) {
      const name = Buffer.from(exp.name, "utf8");
      const description = Buffer.from(exp.description, "utf8");
      const payload = Buffer.allocUnsafe(4 + name.length + description.length);
      payload.writeUInt32BE(name.length, 0);
      name.copy(payload, 4);
      description.copy(payload, 4 + name.length);
      this.#io.write(optionReply(OPT.LIST, REP.SERVER, payload));
    }
    this.#io.write(optionReply(OPT.LIST, REP.ACK));
  }

  #infoOrGo(option: number, data: Buffer): Negotiated | undefined {
    const request = parseInfoRequest(data);
    if (!request) {
      this.#reply(option, REP.ERR_INVALID, "malformed NBD_OPT_INFO/GO data");
      return undefined;
    }
    const exp = this.#ctx.catalog.resolve(request.name);
    if (!exp) {
      this.#reply(option, REP.ERR_UNKNOWN, `unknown export ${JSON.stringify(request.name)}`);
      return undefined;
    }
    // GO takes a place on the export now, so that racing clients cannot all
    // pass the check; INFO only looks, and takes none.
    const full = option === OPT.GO ? this.#ctx.claim(exp) : undefined;
    if (full !== undefined) {
      this.#reply(option, REP.ERR_POLICY, full);
      return undefined;
    }
    const session = this.#session(exp);
    const exportInfo = Buffer.allocUnsafe(12);
    exportInfo.writeUInt16BE(INFO.EXPORT, 0);
    writeUInt64(exportInfo, exp.device.size, 2);
    exportInfo.writeUInt16BE(session.flags, 10);
    this.#io.write(optionReply(option, REP.INFO, exportInfo));
    if (request.items.has(INFO.NAME)) {
      this.#io.write(optionReply(option, REP.INFO, infoString(INFO.NAME, exp.name)));
    }
    if (request.items.has(INFO.DESCRIPTION) && exp.description !== "") {
      this.#io.write(optionReply(option, REP.INFO, infoString(INFO.DESCRIPTION, exp.description)));
    }
    // Sent whether or not it was asked for: clients ignore what they did not request.
    const sizes = Buffer.allocUnsafe(14);
    sizes.writeUInt16BE(INFO.BLOCK_SIZE, 0);
    sizes.writeUInt32BE(exp.blockSizes.minimum, 2);
    sizes.writeUInt32BE(exp.blockSizes.preferred, 6);
    sizes.writeUInt32BE(exp.blockSizes.maximum, 10);
    this.#io.write(optionReply(option, REP.INFO, sizes));
    this.#io.write(optionReply(option, REP.ACK));
    return option === OPT.GO ? { kind: "transmission", session } : undefined;
  }

  #metaContext(option: number, data: Buffer): void {
    const setting = option === OPT.SET_META_CONTEXT;
    // SET replaces the selection even when it fails.
    if (setting) this.#metaExport = undefined;
    if (setting && !this.#structured) {
      this.#reply(option, REP.ERR_INVALID, "negotiate structured replies first");
      return;
    }
    const request = parseMetaContextRequest(data);
    if (!request) {
      this.#reply(option, REP.ERR_INVALID, "malformed meta context request");
      return;
    }
    if (request.queries.some((q) => !q.includes(":"))) {
      this.#reply(option, REP.ERR_INVALID, "a meta context query must start with a namespace");
      return;
    }
    const exp = this.#ctx.catalog.resolve(request.name);
    if (!exp) {
      this.#reply(option, REP.ERR_UNKNOWN, `unknown export ${JSON.stringify(request.name)}`);
      return;
    }
    // LIST: no query means everything; "base:" is the namespace wildcard.
    // SET: only the exact context name selects it. Unknown names are ignored.
    const matches = setting
      ? request.queries.includes(BASE_ALLOCATION)
      : request.queries.length === 0 ||
        request.queries.some((q) => q === BASE_ALLOCATION || q === "base:");
    if (matches) {
      const id = setting ? BASE_ALLOCATION_ID : 0;
      this.#io.write(optionReply(option, REP.META_CONTEXT, metaContextPayload(id)));
      if (setting) this.#metaExport = exp;
    }
    this.#io.write(optionReply(option, REP.ACK));
  }
}

/** Decoded NBD_OPT_INFO / NBD_OPT_GO data. */
export interface InfoRequest {
  name: string;
  items: Set<number>;
}

/** Parse NBD_OPT_INFO/GO data; undefined when the lengths do not add up. */
export function parseInfoRequest(data: Buffer): InfoRequest | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return undefined;
  const name = data.toString("utf8", 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return undefined;
  const items = new Set<number>();
  for (let i = 0; i < count; i++) items.add(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
  return { name, items };
}

/** Decoded NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data. */
export interface MetaContextRequest {
  name: string;
  queries: string[];
}

/** Parse meta context option data; undefined when it is malformed. */
export function parseMetaContextRequest(data: Buffer): MetaContextRequest | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) return undefined;
  const name = data.toString("utf8", 4, 4 + nameLength);
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    at += 4;
    if (length > data.length - at) return undefined;
    queries.push(data.toString("utf8", at, at + length));
    at += length;
  }
  return at === data.length ? { name, queries } : undefined;
}

function infoString(type: number, text: string): Buffer {
  const bytes = Buffer.from(text, "utf8");
  const out = Buffer.allocUnsafe(2 + bytes.length);
  out.writeUInt16BE(type, 0);
  bytes.copy(out, 2);
  return out;
}

function metaContextPayload(id: number): Buffer {
  const name = Buffer.from(BASE_ALLOCATION, "utf8");
  const out = Buffer.allocUnsafe(4 + name.length);
  out.writeUInt32BE(id, 0);
  name.copy(out, 4);
  return out;
}
