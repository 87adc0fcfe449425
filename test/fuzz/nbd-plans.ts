/**
 * What each fuzz session sends: a plan drawn from a seeded Random. Kinds:
 *
 * - bytes:    random bytes, after nothing, the client flags, some options
 *             or a whole handshake;
 * - options:  option haggling gone wrong: unknown codes, lengths that lie,
 *             huge lengths, malformed INFO/GO and meta context data, names
 *             that are too long, not UTF-8 or not there, ABORT, a client
 *             that is not fixed newstyle;
 * - commands: a valid handshake, then requests with any type, flags,
 *             offset (up to 2^64 - 1) and length (up to 2^32 - 1), writes
 *             whose payload is cut short or never comes, bad magic, bytes
 *             after DISC;
 * - pipeline: hundreds of well-framed requests (valid or refused) sent at
 *             once and DISC; every reply is then checked (nbd-wire.ts);
 * - unread:   a flood of 1 MiB reads whose replies the client does not read
 *             while the well-behaved client is served; then it leaves,
 *             abruptly or by reading everything;
 * - flood:    the same from several connections at once (the twenty
 *             clients, a few at a time), all of them left abruptly;
 * - reset:    a connection reset in the middle of a request.
 */
import { CMD, INFO, OPT } from "../../agent/nbd/protocol.ts";
import { goData, metaData, option, request, u32, type WellFramed } from "./nbd-wire.ts";
import type { Random } from "./random.ts";

export type SessionKind = "bytes" | "options" | "commands" | "pipeline" | "unread" | "flood" | "reset";

export const SESSION_KINDS: readonly (readonly [SessionKind, number])[] = [
  ["bytes", 15],
  ["options", 25],
  ["commands", 25],
  ["pipeline", 20],
  ["unread", 5],
  ["flood", 2],
  ["reset", 10],
];

/** An export the fuzz may pick (the well-behaved client's is never among them). */
export interface Target {
  name: string;
  size: number;
  readOnly: boolean;
  /** Its bytes, when nobody may change them (read data is then checked). */
  contents?: Buffer;
}

export interface Plan {
  kind: SessionKind;
  /** Bytes to send, in order; each is one socket write. */
  chunks: Buffer[];
  /** Give the event loop a turn between chunks, so the server sees them as separate reads. */
  drip: boolean;
  /** Leave the replies unread while the well-behaved client is served, then leave like this. */
  unread?: "destroy" | "drain";
  /** Send the plan over this many connections at once (each leaves its replies unread). */
  connections?: number;
  /** Reset the connection right after sending instead of ending it. */
  reset?: boolean;
  /** The session is well framed and ends with DISC: its replies are judged. */
  wellFramed?: WellFramed;
  /** The most bytes the server can owe this session; more means it is streaming garbage. */
  maxReplyBytes: number;
}

const KiB = 1024;
const MiB = 1024 * 1024;
const MAX_BLOCK = 32 * MiB;

/** Draw one session's plan, of the kind given or of one drawn by weight. */
export function planSession(r: Random, targets: readonly Target[], given?: SessionKind): Plan {
  const kind = given ?? r.weighted(SESSION_KINDS);
  const b = new PlanBuilder(kind, r.chance(0.2));
  switch (kind) {
    case "bytes":
      randomBytesSession(r, targets, b);
      break;
    case "options":
      optionsSession(r, targets, b);
      break;
    case "commands": {
      const target = r.pick(targets);
      handshake(r, target, b);
      commands(r, target, b);
      break;
    }
    case "pipeline":
      return pipelineSession(r, r.pick(targets), b);
    case "unread":
      unreadSession(r, targets, b);
      break;
    case "flood":
      unreadSession(r, targets, b);
      b.unread = "destroy";
      b.connections = r.between(2, 8);
      break;
    case "reset": {
      const target = r.pick(targets);
      handshake(r, target, b);
      commands(r, target, b, r.between(1, 5));
      b.send(request({ type: CMD.WRITE, handle: 1n, offset: 0n, length: 64 * KiB }));
      b.send(Buffer.alloc(r.between(0, 32 * KiB), 0x5a)); // a payload cut by the reset
      b.reset = true;
      break;
    }
  }
  return b.build();
}

class PlanBuilder {
  readonly kind: SessionKind;
  readonly drip: boolean;
  readonly chunks: Buffer[] = [];
  sentBytes = 0;
  /** Bytes the server may owe for reads (each capped at the largest block it serves). */
  readBytes = 0;
  unread: Plan["unread"];
  connections = 1;
  reset = false;

  constructor(kind: SessionKind, drip: boolean) {
    this.kind = kind;
    this.drip = drip;
  }

  send(bytes: Buffer): void {
    this.chunks.push(bytes);
    this.sentBytes += bytes.length;
  }

  build(wellFramed?: WellFramed): Plan {
    return {
      kind: this.kind,
      chunks: this.chunks,
      drip: this.drip,
      ...(this.unread ? { unread: this.unread } : {}),
      ...(this.connections > 1 ? { connections: this.connections } : {}),
      ...(this.reset ? { reset: true } : {}),
      ...(wellFramed ? { wellFramed } : {}),
      // Replies to options and refused requests are short and carry at most
      // a message; a few times what was sent, plus the data of the reads.
      maxReplyBytes: MiB + 8 * this.sentBytes + this.readBytes,
    };
  }
}

/** The handshake a good client makes, to reach transmission; returns the options sent. */
function handshake(
  r: Random,
  target: Target,
  b: PlanBuilder,
  opts: { alwaysGo?: boolean } = {},
): { options: number[]; structured: boolean; meta: boolean } {
  const name = Buffer.from(target.name, "utf8");
  const options: number[] = [];
  b.send(u32(r.chance(0.8) ? 3 : 1));
  const structured = r.chance(0.6);
  if (structured) {
    b.send(option(OPT.STRUCTURED_REPLY));
    options.push(OPT.STRUCTURED_REPLY);
  }
  const meta = structured && r.chance(0.5);
  if (meta) {
    b.send(option(OPT.SET_META_CONTEXT, metaData(name, [Buffer.from("base:allocation")])));
    options.push(OPT.SET_META_CONTEXT);
  }
  if (r.chance(0.2)) {
    b.send(option(OPT.INFO, goData(name, [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE])));
    options.push(OPT.INFO);
  }
  // EXPORT_NAME ends the handshake without an option reply, so well-framed sessions use GO.
  if (opts.alwaysGo || r.chance(0.8)) {
    b.send(option(OPT.GO, goData(name, r.chance(0.5) ? [INFO.BLOCK_SIZE] : [])));
    options.push(OPT.GO);
  } else {
    b.send(option(OPT.EXPORT_NAME, name));
  }
  return { options, structured, meta };
}

function randomBytesSession(r: Random, targets: readonly Target[], b: PlanBuilder): void {
  const depth = r.weighted([
    ["none", 3],
    ["flags", 2],
    ["options", 2],
    ["transmission", 3],
  ] as const);
  if (depth === "flags") b.send(u32(3));
  if (depth === "options") {
    b.send(u32(3));
    b.send(option(OPT.STRUCTURED_REPLY));
    b.send(option(OPT.LIST));
  }
  if (depth === "transmission") handshake(r, r.pick(targets), b);
  const n = r.chance(0.1) ? r.between(4 * KiB, 256 * KiB) : r.between(1, 4 * KiB);
  const bytes = r.bytes(n);
  if (!b.drip || bytes.length > 4 * KiB) {
    b.send(bytes);
    return;
  }
  for (let at = 0; at < bytes.length; ) {
    const piece = r.between(1, 64);
    b.send(bytes.subarray(at, at + piece));
    at += piece;
  }
}

/** Names a client might send: real ones, near misses, and nonsense. */
function exportName(r: Random, targets: readonly Target[]): Buffer {
  const real = r.pick(targets).name;
  return r.weighted<() => Buffer>([
    [() => Buffer.from(real), 4],
    [() => Buffer.alloc(0), 1],
    [() => Buffer.from(real.toUpperCase()), 1],
    [() => Buffer.from(`${real}\0`), 1],
    [() => Buffer.from(`../${real}`), 1],
    [() => Buffer.from("dïsk ☃ 💥"), 1],
    [() => Buffer.from([0xff, 0xfe, 0xc0, 0x80]), 1], // not UTF-8
    [() => Buffer.alloc(r.between(4097, 70 * KiB), 0x61), 1], // past the protocol's 4 KiB, some past 64 KiB
    [() => r.bytes(r.between(1, 64)), 1],
  ])();
}

function optionsSession(r: Random, targets: readonly Target[], b: PlanBuilder): void {
  b.send(
    u32(
      r.weighted([
        [3, 8],
        [1, 2],
        [0, 1], // not fixed newstyle: only EXPORT_NAME may follow
        [r.u32(), 1],
      ]),
    ),
  );
  const count = r.between(1, 30);
  for (let i = 0; i < count; i++) {
    const name = () => exportName(r, targets);
    const what = r.weighted([
      ["random", 3],
      ["huge", 2],
      ["lying", 1],
      ["go", 3],
      ["go-malformed", 3],
      ["list", 1],
      ["structured", 1],
      ["meta", 3],
      ["meta-malformed", 3],
      ["unsupported", 1],
      ["abort", 1],
      ["export-name", 1],
      ["enter", 1],
    ] as const);
    switch (what) {
      case "random":
        b.send(option(r.chance(0.5) ? r.int(16) : r.u32(), r.bytes(r.between(0, 200))));
        break;
      case "huge": {
        // The server must skip or refuse what is announced, not wait for it to fit in memory.
        const declared = r.pick([0xffffffff, 0x80000000, 64 * KiB + 1, 16 * MiB]);
        b.send(option(r.pick([OPT.GO, OPT.INFO, OPT.LIST, OPT.SET_META_CONTEXT, r.u32()]), r.bytes(r.between(0, 100)), declared));
        return;
      }
      case "lying": {
        const data = r.bytes(r.between(1, 100));
        b.send(option(r.pick([OPT.GO, OPT.INFO, OPT.LIST]), data, r.int(data.length)));
        break;
      }
      case "go":
        b.send(option(r.pick([OPT.GO, OPT.INFO]), goData(name(), Array.from({ length: r.int(5) }, () => r.int(8)))));
        break;
      case "go-malformed": {
        const n = name();
        const data = r.weighted<() => Buffer>([
          [() => Buffer.concat([u32(n.length + r.between(1, 1000)), n]), 1], // name longer than the data
          [() => Buffer.concat([goData(n, [1, 2]).subarray(0, -2)]), 1], // count larger than the items
          [() => Buffer.concat([goData(n), r.bytes(r.between(1, 9))]), 1], // trailing bytes
          [() => Buffer.concat([u32(0xffffffff), n, Buffer.from([0xff, 0xff])]), 1],
          [() => r.bytes(r.between(0, 5)), 1], // shorter than the fixed fields
        ])();
        b.send(option(r.pick([OPT.GO, OPT.INFO]), data));
        break;
      }
      case "list":
        b.send(option(OPT.LIST, r.chance(0.5) ? Buffer.alloc(0) : r.bytes(r.between(1, 16))));
        break;
      case "structured":
        b.send(option(OPT.STRUCTURED_REPLY, r.chance(0.7) ? Buffer.alloc(0) : r.bytes(4)));
        break;
      case "meta": {
        const queries = Array.from({ length: r.int(6) }, () =>
          Buffer.from(r.pick(["base:allocation", "base:", "qemu:dirty-bitmap:x", "nocolon", "", "base:allocation\0"])),
        );
        b.send(option(r.pick([OPT.LIST_META_CONTEXT, OPT.SET_META_CONTEXT]), metaData(name(), queries)));
        break;
      }
      case "meta-malformed": {
        const n = name();
        const data = r.weighted<() => Buffer>([
          [() => Buffer.concat([u32(n.length), n, u32(0xffffffff)]), 1], // more queries than bytes
          [() => Buffer.concat([u32(n.length), n, u32(1), u32(0xfffffff0), Buffer.from("base:")]), 1],
          [() => Buffer.concat([metaData(n, [Buffer.from("base:allocation")]), r.bytes(3)]), 1],
          // Many queries: over 64 KiB of option data, which must be refused without parsing it.
          [() => metaData(n, Array.from({ length: 5000 }, () => Buffer.from("base:allocation"))), 1],
          [() => r.bytes(r.between(0, 7)), 1],
        ])();
        b.send(option(r.pick([OPT.LIST_META_CONTEXT, OPT.SET_META_CONTEXT]), data));
        break;
      }
      case "unsupported":
        b.send(option(r.pick([OPT.STARTTLS, OPT.EXTENDED_HEADERS, OPT.PEEK_EXPORT]), r.bytes(r.int(8))));
        break;
      case "abort":
        b.send(option(OPT.ABORT, r.chance(0.8) ? Buffer.alloc(0) : r.bytes(4)));
        if (r.chance(0.5)) b.send(r.bytes(r.between(1, 64))); // bytes after ABORT
        return;
      case "export-name":
        b.send(option(OPT.EXPORT_NAME, name()));
        return;
      case "enter": {
        const target = r.pick(targets);
        b.send(option(OPT.GO, goData(Buffer.from(target.name))));
        commands(r, target, b);
        return;
      }
    }
  }
  // Haggling left open: the session ends with the client's FIN.
}

const KNOWN_FLAGS = [0, 1, 2, 4, 8, 16, 1 | 2, 1 | 16, 2 | 16];

function offsetFor(r: Random, size: number): bigint {
  return r.weighted<() => bigint>([
    [() => BigInt(512 * r.int(size / 512)), 6],
    [() => BigInt(r.int(size)), 1],
    [() => BigInt(size - 512), 1],
    [() => BigInt(size), 1],
    [() => BigInt(size + 512), 1],
    [() => 2n ** 53n, 1],
    [() => 2n ** 63n, 1],
    [() => 2n ** 64n - 1n, 1],
    [() => (BigInt(r.u32()) << 32n) | BigInt(r.u32()), 1],
  ])();
}

function lengthFor(r: Random, size: number): number {
  return r.weighted<() => number>([
    [() => 512 * r.between(1, 16), 4],
    [() => 4 * KiB, 2],
    [() => 64 * KiB, 1],
    [() => MiB, 1],
    [() => size, 1],
    [() => 0, 1],
    [() => 1, 1],
    [() => 511, 1],
    [() => MAX_BLOCK, 1],
    [() => MAX_BLOCK + 1, 1],
    [() => 0xffffffff, 1],
    [() => r.u32(), 1],
  ])();
}

/** Random requests after a handshake; stops early where the stream can no longer be framed. */
function commands(r: Random, target: Target, b: PlanBuilder, count = r.between(1, 40)): void {
  for (let i = 0; i < count; i++) {
    const type = r.weighted<number>([
      [CMD.READ, 5],
      [CMD.WRITE, 5],
      [CMD.FLUSH, 2],
      [CMD.TRIM, 2],
      [CMD.CACHE, 1],
      [CMD.WRITE_ZEROES, 2],
      [CMD.BLOCK_STATUS, 2],
      [CMD.DISC, 1],
      [r.between(8, 12), 1],
      [r.int(0x10000), 1],
    ]);
    const flags = r.chance(0.8) ? r.pick(KNOWN_FLAGS) : r.int(0x10000);
    const offset = offsetFor(r, target.size);
    const length = lengthFor(r, target.size);
    const handle = (BigInt(r.u32()) << 32n) | BigInt(i);
    if (r.chance(0.02)) {
      b.send(request({ type, flags, handle, offset, length, magic: r.u32() }));
      return; // bad magic: the server must drop the connection
    }
    if (type === CMD.READ) b.readBytes += Math.min(length, MAX_BLOCK);
    if (type !== CMD.WRITE) {
      b.send(request({ type, flags, handle, offset, length }));
      if (type === CMD.DISC && r.chance(0.5)) {
        b.send(r.bytes(r.between(1, 256))); // nothing may follow DISC; some clients send it anyway
        return;
      }
      continue;
    }
    if (length <= 256 * KiB && r.chance(0.9)) {
      b.send(request({ type, flags, handle, offset, length, payload: Buffer.alloc(length, r.int(256)) }));
      continue;
    }
    // The payload is cut short or never comes: whatever follows is taken as payload.
    b.send(request({ type, flags, handle, offset, length }));
    b.send(Buffer.alloc(r.int(Math.min(length, 64 * KiB)), 0xa5));
    return;
  }
}

/** Hundreds of well-framed requests at once, then DISC; every reply is judged. */
function pipelineSession(r: Random, target: Target, b: PlanBuilder): Plan {
  const { options, structured, meta } = handshake(r, target, b, { alwaysGo: true });
  const requests = new Map<bigint, { type: number; offset: number; length: number }>();
  const count = r.between(20, 300);
  const size = target.size;
  for (let i = 0; i < count; i++) {
    const handle = (BigInt(r.u32()) << 32n) | BigInt(i);
    const type = r.weighted<number>([
      [CMD.READ, 6],
      [CMD.WRITE, 4],
      [CMD.FLUSH, 1],
      [CMD.TRIM, 1],
      [CMD.CACHE, 1],
      [CMD.WRITE_ZEROES, 1],
      [CMD.BLOCK_STATUS, meta ? 2 : 1],
      [r.between(8, 0xffff), 1], // unknown: refused, and it carries no payload
    ]);
    const valid = r.chance(0.8);
    const length = valid ? 512 * r.between(1, 256) : r.pick([0, 1, 511, size + 512]);
    const offset = valid ? 512 * r.int((size - length) / 512 + 1) : r.pick([size, size - 512, 511]);
    if (type === CMD.FLUSH) {
      b.send(request({ type, handle }));
      requests.set(handle, { type, offset: 0, length: 0 });
      continue;
    }
    // Writes always carry exactly what they claim, so the stream stays framed even when refused.
    const payload = type === CMD.WRITE ? Buffer.alloc(length, r.int(256)) : undefined;
    const flags = r.chance(0.9) ? 0 : r.pick(KNOWN_FLAGS);
    b.send(request({ type, flags, handle, offset: BigInt(offset), length, ...(payload ? { payload } : {}) }));
    if (type === CMD.READ) b.readBytes += length;
    requests.set(handle, { type, offset, length });
  }
  b.send(request({ type: CMD.DISC, handle: 0n }));
  return b.build({
    options,
    structured,
    requests,
    readOnly: target.readOnly,
    ...(target.contents ? { contents: target.contents } : {}),
  });
}

/**
 * Queue more 1 MiB reads than a connection may have in flight (96 MiB by
 * default) and do not read the replies: the flood, one client at a
 * time. They read the read-only export, whose 1 MiB chunks are lent to the
 * socket rather than copied, so the fuzz itself stays small in memory.
 */
function unreadSession(r: Random, targets: readonly Target[], b: PlanBuilder): void {
  const target = targets.find((t) => t.readOnly) ?? r.pick(targets);
  handshake(r, target, b);
  const count = r.between(100, 160);
  for (let i = 0; i < count; i++) {
    const aligned = r.chance(0.95);
    const offset = aligned ? MiB * r.int(target.size / MiB) : 512 * r.int((target.size - MiB) / 512);
    b.send(request({ type: CMD.READ, handle: BigInt(i), offset: BigInt(offset), length: MiB }));
    b.readBytes += MiB;
  }
  b.send(request({ type: CMD.DISC, handle: 0n }));
  b.unread = r.chance(0.5) ? "destroy" : "drain";
}
