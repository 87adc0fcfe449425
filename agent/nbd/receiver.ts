/**
 * Where received bytes land.
 *
 * By default Node allocates a fresh 64 KiB buffer for every socket read. At
 * 1 GB/s that is 16,000 off-heap allocations a second, and V8 answers the
 * external-memory churn with a full mark-compact every few tens of
 * milliseconds (measured: a fifth of the serving thread during 1 MiB
 * writes). A `net.Socket` built with the `onread` option instead reads into
 * buffers we choose, so:
 *
 * - a large write payload is read straight into the pooled buffer it is
 *   assembled in (no intermediate buffer, no copy), as nbdkit recv()s into
 *   its request buffer;
 * - everything else (headers, small payloads, handshake) is read into an
 *   append-only slab; views of it go into the ByteQueue exactly as Node's own
 *   chunks did. A slab is never written twice, so those views stay valid for
 *   as long as anyone holds them, and a full slab is simply dropped for the
 *   GC: one allocation per 256 KiB of such traffic instead of one per read.
 *
 * `onread` is only honoured by the `net.Socket` constructor, and `net.Server`
 * builds accepted sockets without it, so `receive()` rebuilds an accepted
 * socket around its handle. That relies on `socket._handle` and the
 * constructor's `handle` option, which Node uses for its own accepted
 * sockets but does not document; when they are not there it falls back to
 * 'data' events (same behaviour, Node's buffers). The server's stats report
 * which path a connection took, and a test pins the fast one.
 */
import { Socket } from "node:net";

/** What the receiver feeds. */
export interface ReceiveSink {
  /**
   * Called before each read: a view to read the next bytes straight into
   * (the rest of a payload being assembled), or the most bytes the next
   * slab read should take.
   */
  nextRead(): Uint8Array | number;
  /** `n` bytes were read into the start of `view`, the last view `nextRead()` returned. */
  landed(view: Uint8Array, n: number): void;
  /** Received bytes the sink may keep a reference to. */
  data(chunk: Buffer): void;
}

/** Slab size: big enough that handshake and headers rarely allocate. */
const SLAB_SIZE = 256 * 1024;
/** Node's own read size; a slab read takes at most this much. */
export const SLAB_READ = 64 * 1024;
/** A slab with less room than this is retired rather than read into in crumbs. */
const SLAB_MIN_FREE = 8 * 1024;

/** How an accepted connection receives. */
export type ReceiveMode = "in-place" | "data-events";

/** Reads of one socket, routed to a sink. */
export class Receiver {
  sink: ReceiveSink | undefined;
  #slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
  #used = 0;
  /** Whether the pending read goes to the sink's view rather than the slab. */
  #direct = false;

  /** For `onread.buffer`: where the next read goes. */
  readonly buffer = (): Uint8Array => {
    const want = this.sink?.nextRead() ?? SLAB_READ;
    if (typeof want !== "number") {
      this.#direct = true;
      return want;
    }
    if (this.#slab.length - this.#used < SLAB_MIN_FREE) {
      this.#slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
      this.#used = 0;
    }
    const n = Math.max(1, Math.min(want, this.#slab.length - this.#used));
    this.#direct = false;
    return this.#slab.subarray(this.#used, this.#used + n);
  };

  /**
   * For `onread.callback`: `n` bytes are in the view `buffer()` returned
   * last. Always true: the sink pauses the socket itself when it must.
   */
  readonly callback = (n: number, view: Uint8Array): boolean => {
    const sink = this.sink;
    if (this.#direct) {
      sink?.landed(view, n);
      return true;
    }
    const chunk = this.#slab.subarray(this.#used, this.#used + n);
    this.#used += n;
    sink?.data(chunk);
    return true;
  };
}

/**
 * Route the reads of an accepted socket, which must still be paused (server
 * created with `pauseOnConnect`), through `receiver`. Returns the socket to
 * use from now on: a new one around the same connection, or `socket` itself
 * with 'data' events when Node does not offer the handle.
 */
export function receive(socket: Socket, receiver: Receiver): { socket: Socket; mode: ReceiveMode } {
  const carrier = socket as Socket & { _handle?: unknown };
  const handle = carrier._handle;
  if (handle !== null && typeof handle === "object" && "readStart" in handle) {
    let rebuilt: Socket | undefined;
    try {
      // `handle` is the option Node's own server passes for accepted sockets.
      const opts = {
        handle,
        readable: true,
        writable: true,
        onread: { buffer: receiver.buffer, callback: receiver.callback },
      };
      rebuilt = new Socket(opts);
    } catch {
      rebuilt = undefined;
    }
    // A Node that ignored `handle` would give us an unconnected socket:
    // then keep the original (it still owns the handle) and take the slow path.
    if (rebuilt && (rebuilt as Socket & { _handle?: unknown })._handle !== handle) {
      rebuilt.destroy();
      rebuilt = undefined;
    }
    if (rebuilt) {
      // The old object no longer owns the connection: destroying it must not
      // close the handle, and releases its slot in the server's count (the
      // NbdServer tracks and drains its connections itself).
      carrier._handle = null;
      socket.destroy();
      return { socket: rebuilt, mode: "in-place" };
    }
  }
  socket.on("data", (chunk: Buffer) => receiver.sink?.data(chunk));
  socket.resume();
  return { socket, mode: "data-events" };
}
