/**
 * The NBD server: named exports of BlockDevices served over unix sockets
 * and/or TCP, fixed newstyle only.
 *
 * ```ts
 * const server = new NbdServer({ exports: { vol1: device }, logger });
 * const addr = await server.listen({ unix: "/run/pagedisk/vol1.sock" });
 * // ... on volume failure:
 * await server.removeExport("vol1");
 * // ... on SIGTERM:
 * await server.close();
 * ```
 *
 * The server never closes devices; whoever created a device closes it,
 * after `removeExport()` or `close()` has let its requests finish.
 *
 * Bounds (each with a default, so a server made without options has them):
 *
 * - memory: the bytes every connection's requests make the server hold, up
 *   to their replies being sent, are charged to one in-flight budget
 *   (budget.ts); a connection that cannot be charged is not read from until
 *   it can. Several servers may share one budget and one buffer pool, as
 *   the agent's exports do;
 * - connections: at most `maxConnections` at once, and at most
 *   `maxConnectionsPerExport` in transmission on any one export. A client
 *   over either limit is told so with NBD_REP_ERR_POLICY on NBD_OPT_GO (and
 *   dropped on NBD_OPT_EXPORT_NAME, which cannot carry an error); clients
 *   already connected are not affected.
 */
import { createServer, type Server, type Socket } from "node:net";
import { listenOnce, listenUnix } from "../net/listen.ts";
import { type BudgetStats, InflightBudget } from "./budget.ts";
import { BufferPool } from "./buffer-pool.ts";
import { ExportCatalog, type ExportOptions, type NbdExport } from "./catalog.ts";
import { Connection, type ConnectionContext } from "./connection.ts";
import type { BlockDevice, BlockSizes } from "./device.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { Receiver, receive } from "./receiver.ts";
import { largestRequestCost, type TransmissionCounters } from "./transmission.ts";

/** An export given at construction: a bare device, or a device with options. */
export type ExportSpec = BlockDevice | ({ device: BlockDevice } & ExportOptions);

/** Construction options of an NbdServer; all optional. */
export interface NbdServerOptions {
  /** Exports by name; more can be added with `addExport()`. */
  exports?: Record<string, ExportSpec>;
  /**
   * Export that the empty name ("") selects. Without it, "" selects an export
   * actually named "", or the only export when there is exactly one.
   */
  defaultExport?: string;
  /** Description for exports that do not carry their own. */
  description?: string;
  /** Block sizes advertised for exports that do not carry their own. */
  blockSizes?: BlockSizes;
  logger?: Logger;
  /**
   * Per connection: bytes of write payloads, read data and unsent replies
   * it may hold before the server stops reading from it (a single larger
   * request still runs, alone). Default 96 MiB, three maximum-size requests.
   */
  maxInflightBytes?: number;
  /**
   * The same for all connections together: a number of bytes for a budget
   * of this server's own, or a budget shared with other servers. It must be
   * at least the largest request an export allows. Default 256 MiB.
   */
  inflightBudget?: number | InflightBudget;
  /** Where large payloads are assembled; may be shared with other servers. Default: its own. */
  pool?: BufferPool;
  /** Most connections open at once, negotiating or not (default 256). */
  maxConnections?: number;
  /**
   * Most connections in transmission on one export (default 128: twice the
   * 64 connections the agent binds a volume's device with at most).
   */
  maxConnectionsPerExport?: number;
  /** Drop clients still negotiating after this long (default 10 s, as qemu-nbd); 0: never. */
  handshakeTimeoutMs?: number;
}

/** How long a graceful stop may take before the remaining connections are cut. */
export interface StopOptions {
  /**
   * After this long, connections still open (a device that never answers, a
   * client that does not read its replies) are destroyed. Default 30 s.
   */
  graceMs?: number;
}

/** Where to listen: a unix socket path, or TCP. */
export type ListenAddress = { unix: string } | { host?: string; port: number };
/** Where the server actually listens (the TCP port is resolved when 0 was asked). */
export type BoundAddress = { unix: string } | { host: string; port: number };

/** Counters for status and metrics; a snapshot. */
export interface NbdServerStats extends TransmissionCounters {
  /** Connections open now and served (handshake or transmission); ones being refused are not counted. */
  connections: number;
  /** Connections accepted since start. */
  accepted: number;
  /** Most connections open at once since start. */
  peakConnections: number;
  /** Connections in transmission, per export name. */
  byExport: Record<string, number>;
  /** Connections accepted whose payloads are read in place (see receiver.ts); the rest use 'data' events. */
  inPlaceConnections: number;
  /** Connections turned away since start because a connection limit was reached. */
  refused: number;
  /** The in-flight budget (shared with other servers when it was given shared). */
  budget: BudgetStats;
  /** Bytes of idle buffers the pool keeps, the most it keeps, and the bytes it freed instead. */
  pool: { pooledBytes: number; maxPooledBytes: number; freedBytes: number };
}

const MiB = 1024 * 1024;
export const DEFAULT_MAX_INFLIGHT = 96 * MiB;
export const DEFAULT_INFLIGHT_BUDGET = 256 * MiB;
export const DEFAULT_MAX_CONNECTIONS = 256;
export const DEFAULT_MAX_CONNECTIONS_PER_EXPORT = 128;
/**
 * Connections over the limit that are being told so at once; more are
 * closed without a word, so a connection flood costs no more than this.
 */
const MAX_REFUSING = 16;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_GRACE_MS = 30_000;

/** Serves named BlockDevices over NBD (fixed newstyle). */
export class NbdServer {
  readonly #catalog: ExportCatalog;
  readonly #log: Logger;
  readonly #description: string;
  readonly #maxInflightBytes: number;
  readonly #budget: InflightBudget;
  readonly #maxConnections: number;
  readonly #maxPerExport: number;
  readonly #handshakeTimeoutMs: number;
  readonly #listeners: Server[] = [];
  readonly #connections = new Set<Connection>();
  /** Connections over the total limit, being refused. */
  readonly #refusing = new Set<Connection>();
  /** Connections in transmission, by the export they serve. */
  readonly #bound = new Map<NbdExport, Set<Connection>>();
  /** Connections counted against each export's limit, from their NBD_OPT_GO on. */
  readonly #claims = new Map<NbdExport, number>();
  readonly #counters: TransmissionCounters = {
    requests: 0,
    errors: 0,
    bytesRead: 0,
    bytesWritten: 0,
    bytesReceivedInPlace: 0,
    bytesDonated: 0,
  };
  readonly #pool: BufferPool;
  #accepted = 0;
  #inPlace = 0;
  #peak = 0;
  #refused = 0;
  #closing: Promise<void> | undefined;

  constructor(opts: NbdServerOptions = {}) {
    this.#catalog = new ExportCatalog(opts.blockSizes, opts.defaultExport);
    this.#log = opts.logger ?? silentLogger;
    this.#description = opts.description ?? "";
    this.#maxInflightBytes = positive("maxInflightBytes", opts.maxInflightBytes ?? DEFAULT_MAX_INFLIGHT);
    const budget = opts.inflightBudget ?? DEFAULT_INFLIGHT_BUDGET;
    this.#budget = typeof budget === "number" ? new InflightBudget(budget) : budget;
    this.#pool = opts.pool ?? new BufferPool();
    this.#maxConnections = positive("maxConnections", opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
    this.#maxPerExport = positive(
      "maxConnectionsPerExport",
      opts.maxConnectionsPerExport ?? DEFAULT_MAX_CONNECTIONS_PER_EXPORT,
    );
    this.#handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    for (const [name, spec] of Object.entries(opts.exports ?? {})) {
      if (isBlockDevice(spec)) {
        this.addExport(name, spec);
      } else {
        const { device, ...exportOpts } = spec;
        this.addExport(name, device, exportOpts);
      }
    }
  }

  /** Offer a device under `name` to new connections. */
  addExport(name: string, device: BlockDevice, opts: ExportOptions = {}): void {
    if (this.#closing) throw new Error("server is closed");
    const exp = this.#catalog.add(name, device, {
      ...opts,
      description: opts.description ?? this.#description,
    });
    // A request the budget can never hold would wait forever.
    const largest = largestRequestCost(exp.blockSizes);
    if (largest > this.#budget.limit) {
      this.#catalog.delete(name);
      throw new RangeError(
        `export ${JSON.stringify(name)}: the in-flight budget of ${this.#budget.limit} bytes ` +
          `cannot hold its largest request (${largest} bytes with overhead)`,
      );
    }
  }

  /** Names of the exports currently offered. */
  exportNames(): string[] {
    return this.#catalog.list().map((e) => e.name);
  }

  /**
   * Withdraw an export gracefully: new clients can no longer select it,
   * requests in flight on its connections complete and are answered (with
   * whatever the device returns, e.g. EIO for a failed volume), later
   * requests get ESHUTDOWN, then its clients are disconnected. Resolves when
   * they are all gone; other exports are untouched.
   */
  async removeExport(name: string, opts: StopOptions = {}): Promise<void> {
    const exp = this.#catalog.delete(name);
    if (!exp) return;
    const conns = [...(this.#bound.get(exp) ?? [])];
    this.#log.info({ export: name, connections: conns.length }, "nbd export removed");
    await this.#drain(conns, opts.graceMs ?? DEFAULT_GRACE_MS);
  }

  /** Start accepting connections; may be called several times for several addresses. */
  async listen(address: ListenAddress): Promise<BoundAddress> {
    if (this.#closing) throw new Error("server is closed");
    // Paused on connect: an accepted socket is rebuilt to read into our own
    // buffers (receiver.ts) before it reads a byte.
    const listener = createServer(
      { noDelay: true, keepAlive: true, pauseOnConnect: true },
      (socket) => this.#accept(socket),
    );
    listener.on("error", (err) => this.#log.error({ err }, "nbd listener error"));
    if ("unix" in address) await listenUnix(listener, address.unix);
    else await listenOnce(listener, { host: address.host ?? "127.0.0.1", port: address.port });
    if (this.#closing) {
      // close() ran while we were binding: do not leave this listener behind.
      listener.close();
      throw new Error("server is closed");
    }
    this.#listeners.push(listener);
    if ("unix" in address) {
      this.#log.info({ unix: address.unix }, "nbd server listening");
      return { unix: address.unix };
    }
    const bound = listener.address();
    if (bound === null || typeof bound === "string") throw new Error("unexpected TCP address");
    this.#log.info({ host: bound.address, port: bound.port }, "nbd server listening");
    return { host: bound.address, port: bound.port };
  }

  /**
   * Stop accepting, let requests in flight finish and be answered (later
   * ones get ESHUTDOWN), then end every connection. Idempotent: a second
   * call returns the first call's promise.
   */
  close(opts: StopOptions = {}): Promise<void> {
    this.#closing ??= this.#shutdown(opts.graceMs ?? DEFAULT_GRACE_MS);
    return this.#closing;
  }

  /** A snapshot of the counters. */
  get stats(): NbdServerStats {
    const byExport: Record<string, number> = {};
    for (const [exp, conns] of this.#bound) byExport[exp.name] = conns.size;
    return {
      ...this.#counters,
      connections: this.#connections.size,
      accepted: this.#accepted,
      peakConnections: this.#peak,
      byExport,
      inPlaceConnections: this.#inPlace,
      refused: this.#refused,
      budget: this.#budget.stats,
      pool: {
        pooledBytes: this.#pool.pooledBytes,
        maxPooledBytes: this.#pool.maxPooledBytes,
        freedBytes: this.#pool.freedBytes,
      },
    };
  }

  async #shutdown(graceMs: number): Promise<void> {
    const stopped = Promise.all(
      this.#listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve()))),
    );
    const all = [...this.#connections, ...this.#refusing];
    await Promise.all([stopped, this.#drain(all, graceMs)]);
    this.#log.info({}, "nbd server closed");
  }

  /** Drain connections; cut those still open after `graceMs`. */
  async #drain(conns: Connection[], graceMs: number): Promise<void> {
    for (const conn of conns) conn.drain();
    const all = Promise.all(conns.map((c) => c.closed));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), graceMs);
    });
    const outcome = await Promise.race([all, expired]);
    clearTimeout(timer);
    if (outcome !== "expired") return;
    const left = conns.filter((c) => !c.socket.destroyed);
    this.#log.warn(
      { connections: left.length, graceMs },
      "nbd connections cut after the grace period",
    );
    for (const conn of left) conn.destroy();
    await all;
  }

  #accept(accepted: Socket): void {
    if (this.#closing) {
      accepted.destroy();
      return;
    }
    const over = this.#connections.size >= this.#maxConnections;
    if (over) {
      this.#refused++;
      if (this.#refusing.size >= MAX_REFUSING) {
        // Debug only: a connection flood would otherwise flood the log too.
        this.#log.debug(
          { connections: this.#connections.size, limit: this.#maxConnections },
          "nbd connection closed unanswered: too many connections",
        );
        accepted.destroy();
        return;
      }
    }
    const receiver = new Receiver();
    const { socket, mode } = receive(accepted, receiver);
    if (mode === "in-place") this.#inPlace++;
    const id = ++this.#accepted;
    const log = childLogger(this.#log, { conn: id });
    const refusal = over
      ? `too many connections to this server (limit ${this.#maxConnections}); try again later`
      : undefined;
    const ctx = this.#context(refusal);
    const conn = new Connection(socket, receiver, ctx, log);
    const members = over ? this.#refusing : this.#connections;
    members.add(conn);
    this.#peak = Math.max(this.#peak, this.#connections.size);
    if (over) {
      log.info({ limit: this.#maxConnections }, "nbd connection refused: too many connections");
    } else {
      log.debug({ remote: socket.remoteAddress ?? "unix" }, "nbd client connected");
    }
    void conn.closed.then(() => {
      members.delete(conn);
      ctx.unclaim();
      const exp = conn.export;
      const set = exp && this.#bound.get(exp);
      if (set) {
        set.delete(conn);
        if (set.size === 0) this.#bound.delete(exp);
      }
      log.debug({}, "nbd client disconnected");
    });
    void conn.start();
  }

  /**
   * What every connection shares with the server; built per connection, it
   * is cheap. `refusal` is set for a connection over the total limit.
   */
  #context(refusal?: string): ConnectionContext & { unclaim(): void } {
    let claimed: NbdExport | undefined;
    return {
      catalog: this.#catalog,
      shuttingDown: () => this.#closing !== undefined,
      refusal: () => refusal,
      counters: this.#counters,
      budget: this.#budget,
      maxInflightBytes: this.#maxInflightBytes,
      handshakeTimeoutMs: this.#handshakeTimeoutMs,
      pool: this.#pool,
      claim: (exp) => {
        const held = this.#claims.get(exp) ?? 0;
        if (held >= this.#maxPerExport) {
          this.#refused++;
          this.#log.info(
            { export: exp.name, limit: this.#maxPerExport },
            "nbd connection refused: too many connections to the export",
          );
          return `too many connections to export ${JSON.stringify(exp.name)} (limit ${this.#maxPerExport}); try again later`;
        }
        this.#claims.set(exp, held + 1);
        claimed = exp;
        return undefined;
      },
      unclaim: () => {
        if (claimed === undefined) return;
        const held = this.#claims.get(claimed)! - 1;
        if (held === 0) this.#claims.delete(claimed);
        else this.#claims.set(claimed, held);
        claimed = undefined;
      },
      bind: (conn, exp) => {
        // The export may have been removed between the GO reply and now.
        if (this.#closing || conn.socket.destroyed || this.#catalog.resolve(exp.name) !== exp) {
          return false;
        }
        let set = this.#bound.get(exp);
        if (!set) {
          set = new Set();
          this.#bound.set(exp, set);
        }
        set.add(conn);
        return true;
      },
    };
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive whole number, got ${value}`);
  }
  return value;
}

/** A bare device rather than `{ device, ...options }` (a device may well have a `device` field). */
function isBlockDevice(spec: ExportSpec): spec is BlockDevice {
  return typeof (spec as Partial<BlockDevice>).read === "function";
}

/** pino-style child when available, so per-connection fields stay on every line. */
function childLogger(log: Logger, bindings: object): Logger {
  const withChild = log as Logger & { child?: (b: object) => Logger };
  return typeof withChild.child === "function" ? withChild.child(bindings) : log;
}
