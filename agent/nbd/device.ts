/**
 * The contract the NBD server serves. Everything behind it (engine layers,
 * memory backend, page blob backend) implements this and nothing else.
 *
 * Offsets and lengths are byte counts as JS numbers (safe up to 2^53, far
 * beyond the 8 TiB page blob limit). The NBD edge validates every request
 * (bounds, read-only, flags) before calling in; implementations may assert.
 */

/** One run of blocks with the same `base:allocation` state. */
export interface Extent {
  offset: number;
  length: number;
  /** NBD_STATE_HOLE: no storage is allocated for this run. */
  hole: boolean;
  /** NBD_STATE_ZERO: this run reads as zeros. */
  zero: boolean;
}

export interface WriteOptions {
  /** Force unit access: resolve only when the data is durable. */
  fua?: boolean;
  /**
   * On `write` only: the caller gives `data`'s memory away, so a device that
   * keeps written bytes may adopt it instead of copying. Layers pass it on
   * untouched; one that writes other bytes (merged, split, read-modified)
   * simply finds `take()` refusing them.
   */
  donation?: PayloadDonation;
}

/**
 * A write payload whose memory is offered to whichever device keeps it.
 * Taken at most once, so two replicas never share one buffer.
 */
export interface PayloadDonation {
  /**
   * The donated buffer, when `data` is exactly all of it, nobody took it
   * yet and the write has not settled; otherwise undefined (then copy). The
   * taker owns the buffer from now on, but must not change its bytes while
   * `open`: layers above may still read `data` until the write settles.
   */
  take(data: Uint8Array): Buffer | undefined;
  /** True until the write the donation came with has settled. */
  readonly open: boolean;
  /**
   * Hand back memory the taker no longer needs (what the adopted buffer
   * replaced), so the caller reuses warm pages rather than fresh ones. The
   * taker must hold no other reference to it, nor have lent a view of it.
   */
  recycle(spare: Buffer): void;
}

export interface ZeroOptions extends WriteOptions {
  /** NBD_CMD_FLAG_NO_HOLE: the range must stay allocated. */
  noHole?: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: fail with ENOTSUP rather than zero slowly. */
  fastZero?: boolean;
}

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

export interface BlockDevice {
  /** Size in bytes; a multiple of `blockSizes.minimum`. */
  readonly size: number;
  readonly readOnly: boolean;
  /** What the device handles natively; the NBD layer advertises it. */
  readonly blockSizes: BlockSizes;
  /** True when several connections to the same device see one consistent view. */
  readonly canMultiConn: boolean;

  /**
   * Read `length` bytes. When `into` (exactly `length` bytes, arbitrary
   * contents) is given, the device may fill every byte of it and return it
   * (or a view of it), sparing an allocation; it may also ignore it and
   * return its own buffer. The caller owns the returned bytes.
   */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /**
   * `data` is lent for the duration of the call: the NBD layer reuses its
   * memory once the promise settles, so a device that keeps the bytes
   * longer (a cache, a write-back queue) must copy them, unless it takes
   * them from `opts.donation`.
   */
  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void>;
  /** Resolves when every write acknowledged before the call is durable. */
  flush(): Promise<void>;
  /** Advisory discard: afterwards the range may read as zeros or as old data. */
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void>;
  /** Afterwards the range reads as zeros. */
  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void>;
  /**
   * Allocation status from `offset`. Returns at least one extent and covers
   * at most `length` bytes from `offset`, in order and without gaps; may cover
   * less than `length`.
   */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  /** Advisory prefetch (NBD_CMD_CACHE). */
  cache(offset: number, length: number): Promise<void>;
  /** Drain, flush and release. Further calls fail with ESHUTDOWN. */
  close(): Promise<void>;
}

/** errno names that can cross the NBD wire. */
export type Errno =
  | "EPERM"
  | "EIO"
  | "ENOMEM"
  | "EINVAL"
  | "ENOSPC"
  | "EOVERFLOW"
  | "ENOTSUP"
  | "ESHUTDOWN";

/**
 * The one error type a BlockDevice rejects with. Inner layers may throw
 * richer errors; whatever is not a BlockError reaches the wire as EIO.
 */
export class BlockError extends Error {
  readonly errno: Errno;
  constructor(errno: Errno, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BlockError";
    this.errno = errno;
  }
}

/** NBD wire error values (NBD protocol spec, "Error values"). */
export const NBD_ERRNO: Readonly<Record<Errno, number>> = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
};

/** Map any rejection from a BlockDevice to the NBD wire error value. */
export function toNbdError(err: unknown): number {
  if (err instanceof BlockError) return NBD_ERRNO[err.errno];
  return NBD_ERRNO.EIO;
}
