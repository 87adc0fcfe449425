/**
 * The contract between the agent daemon and the kernel side: bind a served
 * NBD export to a block device, unbind it, and find the bindings an earlier
 * run of the agent left behind (binder.ts implements it over one driver).
 *
 * Two kinds of binding exist. `nbd` is the kernel's nbd driver configured
 * by nbd-client over netlink (nbd-driver.ts); `fuse-loop` is the fallback
 * for kernels without that driver: nbdfuse exposes the export as a file and
 * a loop device turns the file into a block device (fuse-loop-driver.ts).
 */
import { isAbsolute } from "node:path";
import { BindError } from "./errors.ts";

/** What the daemon asks for: one volume's export, served on a unix socket. */
export interface BindRequest {
  volume: string;
  /** Absolute path of the unix socket our NbdServer listens on. */
  socketPath: string;
  exportName: string;
  /** Size the export must have; a different size is refused. */
  sizeBytes: number;
  /** e.g. "pagedisk:<node>:<volume>:<epoch>"; tells our devices from others'. */
  identifier: string;
  /** NBD connections (multi-conn); default one per CPU up to the binder's maximum. */
  connections?: number;
  /** Logical block size of the device: 512, 1024, 2048 or 4096 (default 4096). */
  blockSize?: number;
  /**
   * Seconds the kernel waits on a request before it gives up on that
   * connection and requeues the request on another one (nbd only).
   */
  timeoutSeconds?: number;
  /** Bind read-only. */
  readOnly?: boolean;
}

/** The nbdfuse side of a fuse-loop binding. */
export interface FuseMount {
  /** Directory nbdfuse is mounted on. */
  mountDir: string;
  /** The virtual file inside it that the loop device is backed by. */
  file: string;
  /** nbdfuse's process id... */
  pid: number;
  /** ...and its start time (clock ticks since boot), so a reused pid is never taken for it. */
  startTime: number;
  /**
   * The relay nbdfuse is connected to (relay.ts), which outlives the agent.
   * Absent in records of agents that bound nbdfuse to the export directly:
   * those bindings cannot be re-adopted and are bound anew.
   */
  relay?: RelayProcess;
}

/** The `pagedisk fuse-relay` process of a fuse-loop binding. */
export interface RelayProcess {
  pid: number;
  startTime: number;
  /** The socket it serves nbdfuse on. */
  socket: string;
}

/** A block device bound to a volume's export; recorded in the state dir. */
export interface Binding {
  volume: string;
  kind: "nbd" | "fuse-loop";
  /** `/dev/nbdN` or `/dev/loopN`. */
  device: string;
  identifier: string;
  socketPath: string;
  exportName: string;
  sizeBytes: number;
  blockSize: number;
  connections: number;
  readOnly: boolean;
  /** ISO time of the bind. */
  boundAt: string;
  /** fuse-loop only. */
  fuse?: FuseMount;
}

/** Binds exports to block devices of one kind. */
export interface KernelBinder {
  readonly kind: "nbd" | "fuse-loop" | "none";
  /**
   * Bind `req.volume`, replacing a binding an earlier run left for it when
   * that one cannot be reused. Resolves once the device accepts I/O; null
   * for kind "none". A failed bind leaves nothing behind.
   */
  bind(req: BindRequest): Promise<Binding | null>;
  /** Remove the volume's binding, if any; idempotent. */
  unbind(volume: string): Promise<void>;
  /** Bindings recorded in the state dir whose devices still exist. */
  recorded(): Promise<Binding[]>;
  /** Release the binder itself; bindings stay in place for the next run. */
  close(): Promise<void>;
}

/** A request with every default applied and every field checked. */
export type CheckedRequest = Required<Omit<BindRequest, "timeoutSeconds">> & {
  timeoutSeconds: number | undefined;
};

export const DEFAULT_BLOCK_SIZE = 4096;
const BLOCK_SIZES = [512, 1024, 2048, 4096];
/** More would only cost the server sockets; the kernel caps nbd at 256 anyway. */
export const MAX_CONNECTIONS = 64;
/** A volume name becomes a file name in the state dir. */
const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Whether `volume` is a name a request may carry (and so a record may exist under). */
export function isVolumeName(volume: unknown): volume is string {
  return typeof volume === "string" && VOLUME_NAME.test(volume);
}

/** Check a request at the edge, so that nothing is spawned for a bad one. */
export function checkBindRequest(req: BindRequest, defaultConnections: number): CheckedRequest {
  const bad = (message: string) => new BindError("INVALID_REQUEST", message);
  if (!isVolumeName(req.volume)) {
    throw bad(
      `volume ${JSON.stringify(req.volume)} must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit`,
    );
  }
  if (typeof req.socketPath !== "string" || !isAbsolute(req.socketPath) || req.socketPath.includes("\0")) {
    throw bad(`socketPath ${JSON.stringify(req.socketPath)} must be an absolute path`);
  }
  // sun_path holds 108 bytes including the terminating NUL.
  if (Buffer.byteLength(req.socketPath) > 107) throw bad(`socketPath is longer than 107 bytes`);
  if (typeof req.exportName !== "string" || req.exportName.includes("\0") || Buffer.byteLength(req.exportName) > 4096) {
    throw bad(`exportName must be a string of at most 4096 bytes without NUL`);
  }
  if (typeof req.identifier !== "string" || req.identifier.length === 0 || req.identifier.length > 255 || /[\0\n]/.test(req.identifier)) {
    throw bad(`identifier must be 1-255 characters on one line`);
  }
  const blockSize = req.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!BLOCK_SIZES.includes(blockSize)) {
    throw bad(`blockSize ${String(blockSize)} must be one of ${BLOCK_SIZES.join(", ")}`);
  }
  if (!Number.isSafeInteger(req.sizeBytes) || req.sizeBytes <= 0 || req.sizeBytes % blockSize !== 0) {
    throw bad(`sizeBytes ${String(req.sizeBytes)} must be a positive multiple of the block size ${blockSize}`);
  }
  const connections = req.connections ?? defaultConnections;
  if (!Number.isInteger(connections) || connections < 1 || connections > MAX_CONNECTIONS) {
    throw bad(`connections ${String(connections)} must be an integer from 1 to ${MAX_CONNECTIONS}`);
  }
  const timeout = req.timeoutSeconds;
  if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 1 || timeout > 86_400)) {
    throw bad(`timeoutSeconds ${String(timeout)} must be an integer from 1 to 86400`);
  }
  return {
    volume: req.volume,
    socketPath: req.socketPath,
    exportName: req.exportName,
    sizeBytes: req.sizeBytes,
    identifier: req.identifier,
    connections,
    blockSize,
    timeoutSeconds: timeout,
    readOnly: req.readOnly ?? false,
  };
}

/** The record of a checked request bound to `device`. */
export function bindingOf(
  req: CheckedRequest,
  kind: Binding["kind"],
  device: string,
  fuse?: FuseMount,
): Binding {
  return {
    volume: req.volume,
    kind,
    device,
    identifier: req.identifier,
    socketPath: req.socketPath,
    exportName: req.exportName,
    sizeBytes: req.sizeBytes,
    blockSize: req.blockSize,
    connections: req.connections,
    readOnly: req.readOnly,
    boundAt: new Date().toISOString(),
    ...(fuse ? { fuse } : {}),
  };
}
