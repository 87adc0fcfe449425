/**
 * The transmission phase of one connection: parse requests from the received
 * bytes, validate them, run them on the device, and write replies.
 *
 * Concurrency: every valid request starts as soon as it is parsed; replies
 * are written as each completes, so they go out of order. Each reply is
 * written in one synchronous run of `socket.write` calls, so its parts are
 * contiguous on the wire; replies completing in the same tick are batched
 * with cork/uncork into one writev. FLUSH simply calls `device.flush()`,
 * which by contract covers every write already acknowledged.
 *
 * Large write payloads are assembled in pooled buffers and offered to the
 * device (donation.ts): a device that keeps written bytes may adopt one
 * instead of copying it.
 *
 * Memory: every request is charged to the server's in-flight budget
 * (budget.ts) from the moment its header is parsed until its reply has been
 * handed to the kernel, so unsent replies count as much as payloads being
 * written. A request that cannot be charged yet waits with its header
 * parsed; nothing after it is parsed, and once a little more has arrived the
 * socket is paused, which pushes back on the client through TCP. It is
 * charged and run when budget is released.
 */
import type { Socket } from "node:net";
import type { BudgetShare } from "./budget.ts";
import { BufferPool } from "./buffer-pool.ts";
import type { ByteQueue } from "./byte-queue.ts";
import {
  type BlockDevice,
  type BlockSizes,
  BlockError,
  type Extent,
  NBD_ERRNO,
  toNbdError,
  type WriteOptions,
} from "./device.ts";
import { PooledDonation } from "./donation.ts";
import type { Logger } from "./logger.ts";
import type { Session } from "./negotiation.ts";
import { SLAB_READ } from "./receiver.ts";
import { CMD, CMD_FLAG, CMD_NAME, REQUEST_HEADER_SIZE } from "./protocol.ts";
import {
  blockStatusChunk,
  errorChunk,
  offsetDataHeader,
  type StatusDescriptor,
  simpleReply,
} from "./replies.ts";
import { decodeRequest, type Rejection, type Request, validateRequest } from "./requests.ts";

/** Counters shared by all connections of a server. */
export interface TransmissionCounters {
  requests: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  /** Write payload bytes the socket read straight into their assembly buffer. */
  bytesReceivedInPlace: number;
  /** Write payload bytes the device kept (took from the donation) instead of copying. */
  bytesDonated: number;
}

/** What one connection's transmission phase is given by its server. */
export interface TransmissionOptions {
  logger: Logger;
  counters: TransmissionCounters;
  /** This connection's account with the server's in-flight budget. */
  share: BudgetShare;
  /** Where large write payloads are assembled; shared by the server's connections. */
  pool: BufferPool;
  /** Called once the connection has been ended (DISC, drain, or after a failure). */
  onFinished?: () => void;
  /**
   * The stream stopped being NBD while the connection was resuming on its
   * own (a request parsed after budget was released); drop the connection.
   */
  onViolation: (err: unknown) => void;
}

/**
 * Bytes charged for every request besides its data: its bookkeeping and its
 * reply header or error, so floods of tiny requests and unread replies to
 * them are bounded too.
 */
export const REQUEST_OVERHEAD = 256;
/** Most descriptors sent in one block status reply (the spec allows fewer than asked). */
const MAX_DESCRIPTORS = 65536;
/** Bytes of one block status descriptor on the wire. */
const DESCRIPTOR_SIZE = 8;
/** Bytes received beyond a request waiting for budget before the socket is paused. */
const WAITING_READ_AHEAD = 64 * 1024;

/** The most one request to an export with these block sizes can be charged. */
export function largestRequestCost(blockSizes: Readonly<BlockSizes>): number {
  return REQUEST_OVERHEAD + Math.max(blockSizes.maximum, DESCRIPTOR_SIZE * MAX_DESCRIPTORS);
}
const SHUTDOWN: Rejection = { errno: "ESHUTDOWN", message: "export is shutting down" };

/** Request handling for one connection once the handshake is over. */
export class Transmission {
  readonly #socket: Socket;
  readonly #session: Session;
  readonly #device: BlockDevice;
  readonly #structured: boolean;
  readonly #opts: TransmissionOptions;
  readonly #queue: ByteQueue;
  /** A write whose header is parsed and whose payload is still arriving. */
  #pendingWrite: Request | undefined;
  /**
   * Pooled buffer the pending write's payload is assembled in (copied from
   * the queue, or read into in place), and bytes assembled so far.
   */
  #assembly: Buffer | undefined;
  #assembled = 0;
  /** The view of `#assembly` handed out for the socket to read into, until bytes land in it. */
  #target: Uint8Array | undefined;
  /**
   * A large payload was just assembled: the next read takes one header only,
   * so that when it is another large write its payload is read in place
   * rather than copied out of a slab read.
   */
  #headerNext = false;
  /** What the pending write was charged, from its header on. */
  #pendingCost = 0;
  /** A parsed request waiting for budget, and what it will be charged. */
  #next: Request | undefined;
  #nextCost = 0;
  /** Requests running on the device. */
  #inflight = 0;
  /** Nothing more is parsed until `#next` can be charged. */
  #waiting = false;
  /** The socket is not read (waiting, with enough already received). */
  #socketPaused = false;
  #pumping = false;
  #pumpAgain = false;
  /** No new request runs; each gets ESHUTDOWN. */
  #draining = false;
  /** DISC or drain: end the connection once nothing is in flight. */
  #ending = false;
  /** DISC was received: the client may send nothing more, so input is discarded. */
  #disconnecting = false;
  /** No more input is parsed; the socket is being ended. */
  #finished = false;
  #corked = false;
  readonly #uncork = () => {
    this.#corked = false;
    this.#socket.uncork();
  };

  constructor(socket: Socket, queue: ByteQueue, session: Session, opts: TransmissionOptions) {
    this.#socket = socket;
    this.#queue = queue;
    this.#session = session;
    this.#device = session.export.device;
    this.#structured = session.structuredReplies;
    this.#opts = opts;
  }

  /**
   * Parse and start every complete request in the queue. Throws
   * ProtocolViolation when the stream is not NBD; the caller drops the
   * connection.
   */
  pump(): void {
    if (this.#waiting) {
      this.#stopReadingIfFull();
      return;
    }
    if (this.#pumping) {
      // Re-entered from a request that completed synchronously: finish the outer loop first.
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        this.#parse();
      } while (this.#pumpAgain);
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * Where the socket should read next: the rest of the payload being
   * assembled when nothing else is buffered (it lands in place, no copy),
   * otherwise how many bytes a slab read should take.
   */
  nextRead(): Uint8Array | number {
    const assembly = this.#assembly;
    const req = this.#pendingWrite;
    if (
      assembly !== undefined &&
      req !== undefined &&
      this.#queue.length === 0 &&
      !this.#finished
    ) {
      this.#target = assembly.subarray(this.#assembled, req.length);
      return this.#target;
    }
    this.#target = undefined;
    return this.#headerNext ? REQUEST_HEADER_SIZE : SLAB_READ;
  }

  /** `n` payload bytes were read into the view `nextRead()` returned. */
  landed(view: Uint8Array, n: number): void {
    if (this.#finished) return; // the connection is ending; the payload is moot
    if (view !== this.#target) throw new Error("bytes landed outside the payload being assembled");
    this.#target = undefined;
    this.#assembled += n;
    this.#opts.counters.bytesReceivedInPlace += n;
    this.pump();
  }

  /**
   * Stop serving (server shutdown or export removal): requests in flight
   * finish and are answered, later ones get ESHUTDOWN, then the connection
   * ends.
   */
  drain(): void {
    this.#draining = true;
    this.#endWhenIdle();
  }

  /**
   * The socket has closed (the client left or was cut off): parse nothing
   * more and stop waiting for budget. Requests still on the device settle,
   * and give back what they were charged, as they finish.
   */
  closed(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#opts.share.cancel();
    this.#next = undefined;
    this.#dropPendingWrite();
    // The socket is gone, so nothing can still be reading into the assembly buffer.
    if (this.#assembly) this.#opts.pool.release(this.#assembly);
    this.#assembly = undefined;
    this.#target = undefined;
  }

  #parse(): void {
    const queue = this.#queue;
    while (!this.#waiting && !this.#finished) {
      if (this.#disconnecting) {
        queue.clear();
        return;
      }
      if (queue.skipping > 0) return; // still discarding a refused write's payload
      let req = this.#pendingWrite;
      if (req === undefined) {
        let next = this.#next;
        if (next === undefined) {
          if (queue.length < REQUEST_HEADER_SIZE) return;
          next = decodeRequest(queue.take(REQUEST_HEADER_SIZE));
          this.#headerNext = false;
          this.#opts.counters.requests++;
          if (next.type === CMD.DISC) {
            this.#disconnecting = true;
            this.#endWhenIdle();
            continue;
          }
        }
        // Validated (again) when it is charged: a drain may have begun while it waited.
        const rejection = this.#draining ? SHUTDOWN : validateRequest(next, this.#session);
        const cost = rejection ? REQUEST_OVERHEAD : this.#costOf(next);
        if (!this.#opts.share.take(cost)) {
          // Charged before a write's payload is read: its bytes stay with the client.
          this.#next = next;
          this.#nextCost = cost;
          this.#waitForBudget();
          return;
        }
        this.#next = undefined;
        if (rejection) {
          // A refused write's payload is still on the wire: drop it as it arrives.
          if (next.type === CMD.WRITE) queue.skip(next.length);
          this.#reject(next, rejection, cost);
          continue;
        }
        if (next.type !== CMD.WRITE) {
          this.#start(next, cost);
          continue;
        }
        req = this.#pendingWrite = next;
        this.#pendingCost = cost;
      }
      if (!this.#assemblePayload(req)) return;
      this.#start(req, this.#pendingCost);
    }
  }

  /** What a valid request is charged: its data, or its largest possible reply. */
  #costOf(req: Request): number {
    switch (req.type) {
      case CMD.READ:
      case CMD.WRITE:
        return REQUEST_OVERHEAD + req.length;
      case CMD.BLOCK_STATUS:
        return REQUEST_OVERHEAD + DESCRIPTOR_SIZE * this.#descriptorLimit(req);
      default:
        return REQUEST_OVERHEAD;
    }
  }

  /** Most descriptors a block status reply to `req` may carry (what it was charged for). */
  #descriptorLimit(req: Request): number {
    if ((req.flags & CMD_FLAG.REQ_ONE) !== 0) return 1;
    const blocks = Math.ceil(req.length / this.#session.export.blockSizes.minimum);
    return Math.max(1, Math.min(MAX_DESCRIPTORS, blocks));
  }

  /** Parse nothing more until the waiting request can be charged. */
  #waitForBudget(): void {
    if (!this.#waiting) {
      this.#waiting = true;
      this.#opts.logger.debug(
        { inflight: this.#inflight, held: this.#opts.share.held, wanted: this.#nextCost },
        "nbd connection paused: waiting for in-flight budget",
      );
    }
    this.#stopReadingIfFull();
    this.#opts.share.wait(this.#onBudget);
  }

  /**
   * While waiting, the socket is still read until a little is queued, so a
   * client that hangs up is noticed (a paused socket never sees the end of
   * its stream, and the connection would linger for as long as the budget
   * stays taken); beyond that the socket is paused and TCP pushes back.
   */
  #stopReadingIfFull(): void {
    if (this.#socketPaused || this.#queue.length < WAITING_READ_AHEAD) return;
    this.#socketPaused = true;
    this.#socket.pause();
  }

  /** Budget was released somewhere: go on if the waiting request now fits. */
  readonly #onBudget = (): void => {
    if (this.#finished || !this.#waiting) return;
    if (!this.#opts.share.fits(this.#nextCost)) {
      this.#opts.share.wait(this.#onBudget);
      return;
    }
    this.#waiting = false;
    if (this.#socketPaused) {
      this.#socketPaused = false;
      this.#socket.resume();
    }
    try {
      this.pump();
    } catch (err) {
      this.#opts.onViolation(err);
    }
  };

  /** The pending write will not run: give back what it was charged. */
  #dropPendingWrite(): void {
    if (this.#pendingWrite === undefined) return;
    this.#pendingWrite = undefined;
    this.#opts.share.give(this.#pendingCost);
    this.#pendingCost = 0;
  }

  /**
   * Collect a write's payload from the queue; false while bytes are missing.
   * Small payloads are taken as they lie (often a view of one received
   * chunk); large ones are copied into a pooled buffer as chunks arrive.
   */
  #assemblePayload(req: Request): boolean {
    const queue = this.#queue;
    if (req.length < BufferPool.MIN_SIZE) {
      if (queue.length < req.length) return false;
      req.payload = queue.take(req.length);
    } else {
      this.#assembly ??= this.#opts.pool.acquire(req.length);
      this.#assembled += queue.takeInto(
        this.#assembly,
        this.#assembled,
        req.length - this.#assembled,
      );
      if (this.#assembled < req.length) return false;
      req.pooled = this.#assembly;
      req.payload = this.#assembly.subarray(0, req.length);
      this.#assembly = undefined;
      this.#assembled = 0;
      this.#headerNext = true;
    }
    this.#pendingWrite = undefined;
    return true;
  }

  #start(req: Request, cost: number): void {
    this.#inflight++;
    void this.#execute(req, cost);
  }

  /**
   * Run one validated request and reply; never rejects. `cost` was charged
   * for it; the reply gives back what is still owed once it has been sent.
   */
  async #execute(req: Request, cost: number): Promise<void> {
    const device = this.#device;
    const fua = (req.flags & CMD_FLAG.FUA) !== 0;
    let owed = cost;
    try {
      switch (req.type) {
        case CMD.READ:
          await this.#read(req, owed);
          break;
        case CMD.WRITE: {
          const payload = req.payload!;
          const pooled = req.pooled;
          req.payload = undefined;
          req.pooled = undefined;
          // A payload that fills its pooled buffer is offered to the device,
          // which may keep it rather than copy it (donation.ts).
          const donation =
            pooled !== undefined && pooled.length === payload.length
              ? new PooledDonation(this.#opts.pool, pooled)
              : undefined;
          try {
            await device.write(req.offset, payload, writeOptions(fua, donation));
          } finally {
            // The device is done with the bytes once write() settles (BlockDevice contract).
            if (donation) {
              if (donation.taken) this.#opts.counters.bytesDonated += req.length;
              donation.settle();
            } else if (pooled) {
              this.#opts.pool.release(pooled);
            }
            // The payload is no longer ours to hold; only its reply is still owed.
            this.#opts.share.give(req.length);
            owed -= req.length;
          }
          this.#replyOk(req, owed);
          this.#opts.counters.bytesWritten += req.length;
          break;
        }
        case CMD.FLUSH:
          await device.flush();
          this.#replyOk(req, owed);
          break;
        case CMD.TRIM:
          await device.trim(req.offset, req.length, fua ? { fua } : undefined);
          this.#replyOk(req, owed);
          break;
        case CMD.WRITE_ZEROES:
          await device.writeZeroes(req.offset, req.length, {
            fua,
            noHole: (req.flags & CMD_FLAG.NO_HOLE) !== 0,
            fastZero: (req.flags & CMD_FLAG.FAST_ZERO) !== 0,
          });
          this.#replyOk(req, owed);
          break;
        case CMD.CACHE:
          await device.cache(req.offset, req.length);
          this.#replyOk(req, owed);
          break;
        case CMD.BLOCK_STATUS: {
          const extents = await device.blockStatus(req.offset, req.length);
          const descriptors = toDescriptors(extents, req, this.#descriptorLimit(req));
          if (descriptors.length === 0) throw new Error("device returned no extents");
          const chunk = blockStatusChunk(req, this.#session.metaContextId, descriptors);
          this.#send(chunk, this.#sent(owed));
          break;
        }
      }
    } catch (err) {
      this.#replyFailure(req, err, owed);
    } finally {
      this.#completed();
    }
  }

  /** READ: large reads are offered a pooled buffer, reclaimed once the socket has sent it. */
  async #read(req: Request, owed: number): Promise<void> {
    const pool = this.#opts.pool;
    const lent = req.length >= BufferPool.MIN_SIZE ? pool.acquire(req.length) : undefined;
    let data: Uint8Array;
    try {
      data = await this.#device.read(req.offset, req.length, lent?.subarray(0, req.length));
      if (data.length !== req.length) {
        throw new Error(`device returned ${data.length} bytes for a ${req.length}-byte read`);
      }
    } catch (err) {
      if (lent) pool.release(lent);
      throw err;
    }
    if (lent && data.buffer !== lent.buffer) {
      pool.release(lent); // the device answered with its own buffer
      this.#replyData(req, data, owed);
    } else {
      this.#replyData(req, data, owed, lent);
    }
    this.#opts.counters.bytesRead += req.length;
  }

  #completed(): void {
    this.#inflight--;
    if (this.#ending && this.#inflight === 0) this.#finish();
  }

  #endWhenIdle(): void {
    this.#ending = true;
    if (this.#inflight === 0) this.#finish();
  }

  /** End the connection after queued replies are flushed. */
  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#opts.share.cancel();
    this.#next = undefined;
    this.#dropPendingWrite();
    // Not given back to the pool: the socket may still be reading into it.
    this.#assembly = undefined;
    this.#target = undefined;
    this.#queue.clear();
    const socket = this.#socket;
    if (this.#corked) this.#uncork();
    // Keep reading (and discarding) until the end is flushed, so unread input
    // does not turn the close into a reset that could lose our last replies.
    if (this.#socketPaused) socket.resume();
    if (!socket.destroyed) socket.end(() => socket.destroy());
    this.#opts.onFinished?.();
  }

  // --- replies -------------------------------------------------------------

  /**
   * Queue bytes on the socket, batching everything written in this tick.
   * `sent` runs once the socket is done with `buf` (at once if it is closed).
   */
  #send(buf: Uint8Array, sent?: () => void): void {
    const socket = this.#socket;
    if (socket.destroyed || socket.writableEnded) {
      sent?.();
      return;
    }
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(this.#uncork);
    }
    // Node calls a write's callback once the kernel has the bytes, and also
    // when the socket is destroyed first, so what a reply owes is always given back.
    socket.write(buf, sent);
  }

  /** The callback that ends a reply: give back what it owed, and the pooled buffer it was sent from. */
  #sent(owed: number, lent?: Buffer): () => void {
    return () => {
      if (lent) this.#opts.pool.release(lent);
      this.#opts.share.give(owed);
    };
  }

  #replyOk(req: Request, owed: number): void {
    // A simple reply is allowed for any payload-less success, structured or not.
    this.#send(simpleReply(req, 0), this.#sent(owed));
  }

  #replyData(req: Request, data: Uint8Array, owed: number, lent?: Buffer): void {
    // Header and data are written back to back in this same tick: one frame.
    if (this.#structured) this.#send(offsetDataHeader(req, req.offset, data.length, true));
    else this.#send(simpleReply(req, 0));
    this.#send(data, this.#sent(owed, lent));
  }

  #replyError(req: Request, error: number, message: string, owed: number): void {
    this.#opts.counters.errors++;
    const reply = this.#structured ? errorChunk(req, error, message) : simpleReply(req, error);
    this.#send(reply, this.#sent(owed));
  }

  #reject(req: Request, rejection: Rejection, owed: number): void {
    this.#opts.logger.debug(
      { command: CMD_NAME[req.type] ?? req.type, offset: req.offset, length: req.length },
      `nbd request refused (${rejection.errno}): ${rejection.message}`,
    );
    this.#replyError(req, NBD_ERRNO[rejection.errno], rejection.message, owed);
  }

  #replyFailure(req: Request, err: unknown, owed: number): void {
    const error = toNbdError(err);
    const message = err instanceof Error ? err.message : String(err);
    const fields = {
      command: CMD_NAME[req.type] ?? req.type,
      offset: req.offset,
      length: req.length,
      err,
    };
    // A BlockError is the device's considered answer (its layers log the cause);
    // anything else reaches the wire as EIO and deserves a look.
    if (err instanceof BlockError) this.#opts.logger.debug(fields, "nbd request failed");
    else this.#opts.logger.warn(fields, "nbd request failed with an unexpected error");
    this.#replyError(req, error, message, owed);
  }
}

/** Options for a write; undefined when there are none, as most writes have. */
function writeOptions(
  fua: boolean,
  donation: PooledDonation | undefined,
): WriteOptions | undefined {
  if (donation) return fua ? { fua, donation } : { donation };
  return fua ? { fua } : undefined;
}

/** Turn device extents into wire descriptors within the request's rules. */
export function toDescriptors(
  extents: readonly Extent[],
  req: Pick<Request, "length" | "flags">,
  limit = MAX_DESCRIPTORS,
): StatusDescriptor[] {
  const out: StatusDescriptor[] = [];
  const reqOne = (req.flags & CMD_FLAG.REQ_ONE) !== 0;
  let covered = 0;
  for (const e of extents) {
    if (e.length <= 0) continue;
    // Never describe more than asked: the spec requires it with REQ_ONE, and
    // the device contract promises it anyway.
    const length = Math.min(e.length, req.length - covered);
    if (length <= 0) break;
    out.push({ length, hole: e.hole, zero: e.zero });
    covered += length;
    if (reqOne || out.length >= limit) break;
  }
  return out;
}
