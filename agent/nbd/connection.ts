/**
 * One client connection: owns the socket and its receive queue, runs the
 * handshake, then hands the same queue to the transmission phase.
 *
 * Whatever goes wrong on this connection (garbage, a violation, a reset, a
 * bug) ends this connection only; nothing is thrown to the server.
 */
import type { Socket } from "node:net";
import type { InflightBudget } from "./budget.ts";
import type { BufferPool } from "./buffer-pool.ts";
import { ByteQueue } from "./byte-queue.ts";
import type { NbdExport } from "./catalog.ts";
import type { Logger } from "./logger.ts";
import { type HandshakeIo, type NegotiationContext, negotiate } from "./negotiation.ts";
import { type ReceiveSink, type Receiver, SLAB_READ } from "./receiver.ts";
import { Transmission, type TransmissionCounters } from "./transmission.ts";
import { ConnectionClosed, ConnectionRefused, ProtocolViolation } from "./violation.ts";

/** What a connection needs from its server. */
export interface ConnectionContext extends NegotiationContext {
  counters: TransmissionCounters;
  /** The budget this connection's requests are charged to (shared with the server's others). */
  budget: InflightBudget;
  /** Most bytes one connection may hold of the budget (a lone larger request still runs). */
  maxInflightBytes: number;
  /** A client still negotiating after this long is dropped; 0 means never. */
  handshakeTimeoutMs: number;
  pool: BufferPool;
  /**
   * Called when the handshake selected an export, which `claim()` already
   * counted this connection on. Returning false means the export is going
   * away: the connection then refuses every request.
   */
  bind(conn: Connection, exp: NbdExport): boolean;
}

type Waiter =
  | { kind: "read"; n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void }
  | { kind: "skip"; resolve: () => void; reject: (e: Error) => void };

/** One accepted socket, from greeting to close. */
export class Connection implements ReceiveSink {
  readonly socket: Socket;
  /** Resolves when the socket has closed, whatever the reason. */
  readonly closed: Promise<void>;
  #phase: "handshake" | "transmission" | "closed" = "handshake";
  readonly #queue = new ByteQueue();
  readonly #ctx: ConnectionContext;
  readonly #log: Logger;
  #waiter: Waiter | undefined;
  #transmission: Transmission | undefined;
  #export: NbdExport | undefined;

  /** `receiver` delivers the socket's bytes (see receiver.ts); the connection becomes its sink. */
  constructor(socket: Socket, receiver: Receiver, ctx: ConnectionContext, log: Logger) {
    this.socket = socket;
    this.#ctx = ctx;
    this.#log = log;
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    receiver.sink = this;
    socket.on("error", (err) => this.#log.debug({ err }, "nbd socket error"));
    socket.once("close", () => this.#onClose());
  }

  /** The export this connection serves, once the handshake chose one. */
  get export(): NbdExport | undefined {
    return this.#export;
  }

  /** Run the handshake and then serve; resolves when the handshake is over. */
  async start(): Promise<void> {
    const io: HandshakeIo = {
      read: (n) => this.#read(n),
      skip: (n) => this.#skip(n),
      write: (data) => {
        if (!this.socket.destroyed) this.socket.write(data);
      },
    };
    const limit = this.#ctx.handshakeTimeoutMs;
    const timer =
      limit > 0
        ? setTimeout(() => {
            if (this.#phase !== "handshake") return;
            this.#log.info(
              { timeoutMs: limit },
              "nbd handshake took too long; dropping the client",
            );
            this.destroy();
          }, limit).unref()
        : undefined;
    try {
      const result = await negotiate(io, this.#ctx);
      clearTimeout(timer);
      if (this.#phase !== "handshake") return;
      if (result.kind === "aborted") {
        this.#log.debug({}, "nbd client aborted the handshake");
        this.#end();
        return;
      }
      const { session } = result;
      this.#export = session.export;
      this.#phase = "transmission";
      const transmission = new Transmission(this.socket, this.#queue, session, {
        logger: this.#log,
        counters: this.#ctx.counters,
        share: this.#ctx.budget.share(this.#ctx.maxInflightBytes),
        pool: this.#ctx.pool,
        onFinished: () => {
          this.#phase = "closed";
        },
        onViolation: (err) => this.#fail(err),
      });
      this.#transmission = transmission;
      this.#log.debug(
        { export: session.export.name, structured: session.structuredReplies },
        "nbd client entered transmission",
      );
      if (!this.#ctx.bind(this, session.export)) transmission.drain();
      this.#pump();
    } catch (err) {
      clearTimeout(timer);
      this.#fail(err);
    }
  }

  /** Hard stop: close the socket now; replies not yet sent are lost. */
  destroy(): void {
    this.#phase = "closed";
    this.#queue.clear();
    this.socket.destroy();
  }

  /**
   * Graceful stop: in the handshake the connection just ends (the spec lets
   * a server terminate negotiation); in transmission, requests in flight are
   * answered first and later ones get ESHUTDOWN.
   */
  drain(): void {
    if (this.#phase === "handshake") this.#end();
    else if (this.#phase === "transmission") this.#transmission!.drain();
  }

  /** ReceiveSink: in transmission, a payload being assembled may take the next read in place. */
  nextRead(): Uint8Array | number {
    return this.#phase === "transmission" ? this.#transmission!.nextRead() : SLAB_READ;
  }

  /** ReceiveSink: bytes read in place, into a view `nextRead()` returned. */
  landed(view: Uint8Array, n: number): void {
    if (this.#phase !== "transmission") return;
    try {
      this.#transmission!.landed(view, n);
    } catch (err) {
      this.#fail(err);
    }
  }

  /** ReceiveSink: bytes to queue. */
  data(chunk: Buffer): void {
    if (this.#phase === "closed") return;
    this.#queue.push(chunk);
    if (this.#phase === "transmission") this.#pump();
    else this.#wake();
  }

  #pump(): void {
    try {
      this.#transmission!.pump();
    } catch (err) {
      this.#fail(err);
    }
  }

  #read(n: number): Promise<Buffer> {
    if (this.#queue.length >= n) return Promise.resolve(this.#queue.take(n));
    if (this.#phase === "closed") return Promise.reject(new ConnectionClosed());
    return new Promise((resolve, reject) => {
      this.#waiter = { kind: "read", n, resolve, reject };
    });
  }

  #skip(n: number): Promise<void> {
    if (this.#queue.skip(n) === 0) return Promise.resolve();
    if (this.#phase === "closed") return Promise.reject(new ConnectionClosed());
    return new Promise((resolve, reject) => {
      this.#waiter = { kind: "skip", resolve, reject };
    });
  }

  #wake(): void {
    const w = this.#waiter;
    if (!w) return;
    if (w.kind === "read" && this.#queue.length >= w.n) {
      this.#waiter = undefined;
      w.resolve(this.#queue.take(w.n));
    } else if (w.kind === "skip" && this.#queue.skipping === 0) {
      this.#waiter = undefined;
      w.resolve();
    }
  }

  #fail(err: unknown): void {
    if (err instanceof ConnectionClosed) {
      this.#log.debug({}, "nbd client left during the handshake");
    } else if (err instanceof ConnectionRefused) {
      this.#log.info({ reason: err.message }, "nbd connection refused");
    } else if (err instanceof ProtocolViolation) {
      this.#log.info({ reason: err.message }, "nbd protocol violation; dropping the connection");
    } else {
      this.#log.error({ err }, "nbd connection failed");
    }
    this.#phase = "closed";
    this.#queue.clear();
    this.socket.destroy();
  }

  #end(): void {
    this.#phase = "closed";
    this.#queue.clear();
    if (!this.socket.destroyed) this.socket.end(() => this.socket.destroy());
  }

  #onClose(): void {
    this.#phase = "closed";
    this.#queue.clear();
    this.#transmission?.closed();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(new ConnectionClosed());
  }
}
