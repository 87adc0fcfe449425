/**
 * Encoding of everything the server sends: option replies during the
 * handshake, simple replies and structured reply chunks during transmission.
 *
 * Handles are opaque 64-bit values; they travel as two 32-bit halves so no
 * BigInt is created per request.
 */
import {
  OPTION_REPLY_HEADER_SIZE,
  OPTION_REPLY_MAGIC,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STATE_HOLE,
  STATE_ZERO,
  STRUCTURED_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from "./protocol.ts";

/** The client's 64-bit request handle, split in two to stay a small integer pair. */
export interface Handle {
  handleHi: number;
  handleLo: number;
}

/** One `base:allocation` descriptor as sent on the wire. */
export interface StatusDescriptor {
  length: number;
  hole: boolean;
  zero: boolean;
}

/**
 * Error strings are capped in UTF-16 units so that, encoded (3 bytes per
 * unit at most), they stay within the protocol's 4096-byte string limit.
 */
const MAX_MESSAGE_UNITS = 1000;

/** An option reply: magic, option, reply type, length, payload. */
export function optionReply(option: number, type: number, payload?: Uint8Array): Buffer {
  const length = payload?.length ?? 0;
  const out = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + length);
  out.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(length, 16);
  if (payload) out.set(payload, OPTION_REPLY_HEADER_SIZE);
  return out;
}

/** An option error reply carrying a human-readable message. */
export function optionError(option: number, type: number, message: string): Buffer {
  return optionReply(option, type, messageBytes(message));
}

/** The simple reply header (the read payload, if any, follows separately). */
export function simpleReply(h: Handle, error: number): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  out.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(error, 4);
  out.writeUInt32BE(h.handleHi, 8);
  out.writeUInt32BE(h.handleLo, 12);
  return out;
}

/** Write a structured chunk header into `out` at 0. */
function chunkHeader(out: Buffer, h: Handle, flags: number, type: number, length: number): void {
  out.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  out.writeUInt32BE(h.handleHi, 8);
  out.writeUInt32BE(h.handleLo, 12);
  out.writeUInt32BE(length, 16);
}

/** NBD_REPLY_TYPE_NONE with DONE: success of a request that has no payload. */
export function noneChunk(h: Handle): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE);
  chunkHeader(out, h, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0);
  return out;
}

/**
 * Header and offset of an NBD_REPLY_TYPE_OFFSET_DATA chunk; the `dataLength`
 * bytes of data follow it on the wire. `done` marks it the final chunk, which
 * is only allowed because the data is already in hand when this is sent.
 */
export function offsetDataHeader(
  h: Handle,
  offset: number,
  dataLength: number,
  done: boolean,
): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE + 8);
  chunkHeader(out, h, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_DATA, 8 + dataLength);
  writeUInt64(out, offset, STRUCTURED_HEADER_SIZE);
  return out;
}

/** NBD_REPLY_TYPE_OFFSET_HOLE: `length` bytes at `offset` read as zeros. */
export function offsetHoleChunk(h: Handle, offset: number, length: number, done: boolean): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE + 12);
  chunkHeader(out, h, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_HOLE, 12);
  writeUInt64(out, offset, STRUCTURED_HEADER_SIZE);
  out.writeUInt32BE(length, STRUCTURED_HEADER_SIZE + 8);
  return out;
}

/** NBD_REPLY_TYPE_ERROR with DONE: the request failed with `error`. */
export function errorChunk(h: Handle, error: number, message: string): Buffer {
  const msg = messageBytes(message);
  const out = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE + 6 + msg.length);
  chunkHeader(out, h, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, 6 + msg.length);
  out.writeUInt32BE(error, STRUCTURED_HEADER_SIZE);
  out.writeUInt16BE(msg.length, STRUCTURED_HEADER_SIZE + 4);
  msg.copy(out, STRUCTURED_HEADER_SIZE + 6);
  return out;
}

/**
 * NBD_REPLY_TYPE_BLOCK_STATUS with DONE, for one metadata context. The caller
 * passes non-empty descriptors with lengths below 2^32.
 */
export function blockStatusChunk(
  h: Handle,
  contextId: number,
  descriptors: readonly StatusDescriptor[],
): Buffer {
  const length = 4 + 8 * descriptors.length;
  const out = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE + length);
  chunkHeader(out, h, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, length);
  out.writeUInt32BE(contextId, STRUCTURED_HEADER_SIZE);
  let at = STRUCTURED_HEADER_SIZE + 4;
  for (const d of descriptors) {
    out.writeUInt32BE(d.length, at);
    out.writeUInt32BE((d.hole ? STATE_HOLE : 0) | (d.zero ? STATE_ZERO : 0), at + 4);
    at += 8;
  }
  return out;
}

/** Write a non-negative safe integer as a big-endian u64 without BigInt. */
export function writeUInt64(out: Buffer, value: number, at: number): void {
  out.writeUInt32BE(Math.floor(value / 0x100000000), at);
  out.writeUInt32BE(value >>> 0, at + 4);
}

/** Read a big-endian u64 as a number (inexact above 2^53, which is past any export). */
export function readUInt64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * 0x100000000 + buf.readUInt32BE(at + 4);
}

/** Strings on the wire are UTF-8 without NUL; a cut surrogate becomes U+FFFD. */
function messageBytes(message: string): Buffer {
  const text = message.length > MAX_MESSAGE_UNITS ? message.slice(0, MAX_MESSAGE_UNITS) : message;
  return Buffer.from(text.replaceAll("\0", " "), "utf8");
}
