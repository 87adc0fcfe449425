/**
 * Transmission-phase requests: decoding the 28-byte header and validating
 * a request once, at the edge, before any device sees it (as nbdkit's
 * validate_request does). Layers below may assume what is checked here.
 */
import type { Errno } from "./device.ts";
import type { Session } from "./negotiation.ts";
import { CMD, CMD_FLAG, REQUEST_MAGIC, TX } from "./protocol.ts";
import { type Handle, readUInt64 } from "./replies.ts";
import { ProtocolViolation } from "./violation.ts";

/** One decoded request; `payload` is filled in for NBD_CMD_WRITE once it has arrived. */
export interface Request extends Handle {
  type: number;
  flags: number;
  offset: number;
  length: number;
  payload: Buffer | undefined;
  /** The pooled buffer under `payload`, to give back once the device is done with it. */
  pooled?: Buffer | undefined;
}

/** Why a request is refused, as it will be reported to the client. */
export interface Rejection {
  errno: Errno;
  message: string;
}

/** Decode a request header; a wrong magic means the stream is lost. */
export function decodeRequest(header: Buffer): Request {
  if (header.readUInt32BE(0) !== REQUEST_MAGIC) {
    throw new ProtocolViolation(`bad request magic 0x${header.readUInt32BE(0).toString(16)}`);
  }
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    handleHi: header.readUInt32BE(8),
    handleLo: header.readUInt32BE(12),
    offset: readUInt64(header, 16),
    length: header.readUInt32BE(24),
    payload: undefined,
    pooled: undefined,
  };
}

/** Commands that change data; refused with EPERM on a read-only export. */
function isWriteCommand(type: number): boolean {
  return type === CMD.WRITE || type === CMD.TRIM || type === CMD.WRITE_ZEROES;
}

/**
 * Check a request against the session (NBD spec, "Error values" and
 * "Block size constraints"). Returns undefined when the request may run.
 * DISC is not validated: it always ends the session.
 */
export function validateRequest(req: Request, session: Session): Rejection | undefined {
  const exp = session.export;
  const allowed = allowedFlags(req.type, session);
  if (allowed === undefined) return reject("EINVAL", `unknown command ${req.type}`);
  if (exp.readOnly && isWriteCommand(req.type)) return reject("EPERM", "export is read-only");
  if ((req.flags & ~allowed) !== 0) {
    return reject("EINVAL", `unsupported flags 0x${req.flags.toString(16)} for this command`);
  }
  if (req.type === CMD.FLUSH) {
    return req.offset !== 0 || req.length !== 0
      ? reject("EINVAL", "flush offset and length must be zero")
      : undefined;
  }
  if (req.type === CMD.BLOCK_STATUS && session.metaContextId === 0) {
    return reject("EINVAL", "no metadata context was negotiated");
  }
  if (req.length === 0) return reject("EINVAL", "zero-length request");
  // READ, WRITE, CACHE and plain WRITE_ZEROES are bound by the advertised
  // maximum; TRIM, BLOCK_STATUS and fast zeroing may be larger per spec.
  const bounded =
    req.type === CMD.READ ||
    req.type === CMD.WRITE ||
    req.type === CMD.CACHE ||
    (req.type === CMD.WRITE_ZEROES && (req.flags & CMD_FLAG.FAST_ZERO) === 0);
  if (bounded && req.length > exp.blockSizes.maximum) {
    return reject(
      "EINVAL",
      `request of ${req.length} bytes exceeds the maximum ${exp.blockSizes.maximum}`,
    );
  }
  if (req.offset + req.length > exp.device.size) {
    // The spec asks for ENOSPC on writes past the end and EINVAL otherwise.
    const errno = req.type === CMD.WRITE || req.type === CMD.WRITE_ZEROES ? "ENOSPC" : "EINVAL";
    return reject(errno, `request ${req.offset}+${req.length} is beyond the end of the export`);
  }
  return undefined;
}

/** Flags a command accepts under this session, or undefined for an unknown command. */
function allowedFlags(type: number, session: Session): number | undefined {
  // FUA is valid on every command once advertised (clients are known to set it anywhere).
  const fua = (session.flags & TX.SEND_FUA) !== 0 ? CMD_FLAG.FUA : 0;
  switch (type) {
    case CMD.READ:
      return fua | ((session.flags & TX.SEND_DF) !== 0 ? CMD_FLAG.DF : 0);
    case CMD.WRITE:
    case CMD.FLUSH:
    case CMD.TRIM:
    case CMD.CACHE:
      return fua;
    case CMD.WRITE_ZEROES:
      return (
        fua |
        CMD_FLAG.NO_HOLE |
        ((session.flags & TX.SEND_FAST_ZERO) !== 0 ? CMD_FLAG.FAST_ZERO : 0)
      );
    case CMD.BLOCK_STATUS:
      return fua | CMD_FLAG.REQ_ONE;
    default:
      return undefined;
  }
}

function reject(errno: Errno, message: string): Rejection {
  return { errno, message };
}
