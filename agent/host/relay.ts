/**
 * The fuse relay (`pagedisk fuse-relay`, hidden): the piece of a fuse-loop
 * binding that outlives an agent restart. nbdfuse cannot reconnect, so it
 * never talks to the agent: it talks to this relay on a socket of its own
 * that stays put, and the relay is the agent's NBD client.
 *
 *   loop device -> FUSE file -> nbdfuse -> relay socket -> relay -> agent's export socket
 *
 * While the agent is away (restarting, killed), the relay keeps nbdfuse's
 * connections open and holds every request, the ones in flight when the
 * agent went and the new ones. It connects again once the agent serves the
 * export again and sends the held requests there; nbdfuse, the loop device
 * and a filesystem mounted on it see a pause, not an error.
 *
 * Why sending a request again is correct:
 * - the agent is the volume's only writer, and a held request is sent
 *   again with the same offset, length, bytes and flags, so if the first
 *   attempt landed too, the same bytes land in the same place twice;
 * - the relay answers a request only when an agent has answered it, so
 *   every write the client saw completed was acknowledged by an agent, and
 *   an agent acknowledges a write only once every online replica holds it
 *   (write-through; there is no write-back state to lose in a crash). A
 *   FLUSH sent again to the new agent therefore covers everything the
 *   client saw complete before it sent the FLUSH, which is all NBD asks;
 * - a FUA write is sent again with FUA, so its answer still means durable;
 * - requests held together were in flight together, and NBD gives no order
 *   among requests in flight, so sending them again in any order is fine
 *   (the relay keeps the order they came in anyway).
 *
 * Where the relay may connect again: to the server it was connected to (the
 * same socket file, a dropped connection), or to a new socket at the path
 * once the agent that re-adopted the binding says so with SIGHUP. An agent
 * sends it only for a binding of the same attachment (same identifier, so
 * the same epoch); a volume given back at a new epoch is bound anew, and
 * the relay holding the old epoch's requests is stopped with the binding.
 *
 * The hold is bounded: if no agent takes the requests within 180 s (the
 * time the kernel's nbd driver waits on a dead connection, and the agent's
 * own nbd binding timeout), every held request and every new one fails
 * with EIO until an agent is back. The requests held are bounded by the
 * relay's NBD server's in-flight budget: past it, nbdfuse is not read from.
 */
import { lstat } from "node:fs/promises";
import type { Logger } from "../log.ts";
import { type BlockDevice, BlockError, type BlockSizes, type Errno, type Extent, NBD_ERRNO, type WriteOptions, type ZeroOptions } from "../nbd/device.ts";
import { DEFAULT_BLOCK_SIZES } from "../nbd/catalog.ts";
import { NbdServer } from "../nbd/server.ts";
import { CMD, CMD_FLAG, TX } from "../nbd/protocol.ts";
import { LinkClosed, type LinkReply, NbdLink } from "./nbd-link.ts";
import { writeStateFile } from "./state-file.ts";

/** What the relay is started with: one JSON argument of `pagedisk fuse-relay`. */
export interface RelaySpec {
  /** Socket the relay serves nbdfuse on. */
  listen: string;
  /** The agent's export socket. */
  upstream: string;
  exportName: string;
  /** The export must have exactly this size, now and after every reconnection. */
  sizeBytes: number;
  readOnly: boolean;
  /** Written with the relay's pid once it serves. */
  pidfile: string;
  /** How long requests are held with no agent before they fail (default 180). */
  holdSeconds?: number;
}

export const DEFAULT_HOLD_SECONDS = 180;
const NBD_ESHUTDOWN = NBD_ERRNO.ESHUTDOWN;
const ERRNO_OF = new Map<number, Errno>(Object.entries(NBD_ERRNO).map(([name, value]) => [value, name as Errno]));
/** Reconnection attempts back off to this; SIGHUP wakes the loop at once. */
const MAX_RETRY_MS = 1_000;

/** Check a spec at the edge; the message says what is wrong. */
export function checkRelaySpec(value: unknown): RelaySpec {
  const v = (value ?? {}) as Partial<RelaySpec>;
  const path = (p: unknown) => typeof p === "string" && p.startsWith("/") && !p.includes("\0");
  if (!path(v.listen) || !path(v.upstream) || !path(v.pidfile)) {
    throw new Error("listen, upstream and pidfile must be absolute paths");
  }
  if (typeof v.exportName !== "string") throw new Error("exportName must be a string");
  if (!Number.isSafeInteger(v.sizeBytes) || (v.sizeBytes ?? 0) <= 0) throw new Error("sizeBytes must be a positive integer");
  if (typeof v.readOnly !== "boolean") throw new Error("readOnly must be true or false");
  const hold = v.holdSeconds ?? DEFAULT_HOLD_SECONDS;
  if (!Number.isInteger(hold) || hold < 1 || hold > 86_400) throw new Error("holdSeconds must be an integer from 1 to 86400");
  return { ...(v as RelaySpec), holdSeconds: hold };
}

/** One request as the relay holds it until an agent has answered it. */
interface Held {
  type: number;
  flags: number;
  offset: number;
  length: number;
  payload: Uint8Array | undefined;
  resolve(reply: LinkReply): void;
}

export interface UpstreamOptions {
  socketPath: string;
  exportName: string;
  sizeBytes: number;
  holdMs: number;
  log: Logger;
}

/**
 * The relay's side towards the agent: one NBD connection at a time, the
 * requests waiting for one, and the reconnection loop.
 */
export class Upstream {
  readonly #opts: UpstreamOptions;
  #link: NbdLink | undefined;
  /** Socket files (by inode) the relay may connect to. */
  readonly #allowed = new Set<number>();
  /** Requests waiting for a connection, in the order they came. */
  #waiting: Held[] = [];
  /** Requests sent and not yet answered. */
  readonly #sent = new Set<Held>();
  #holdTimer: NodeJS.Timeout | undefined;
  /** No agent within the hold: requests fail until one is back. */
  #expired = false;
  #reconnecting: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #closed = false;
  /** Times an agent was lost and found again; for the log. */
  #reconnections = 0;

  constructor(opts: UpstreamOptions) {
    this.#opts = opts;
  }

  /** The first connection; rejects when the export is not served (or not as expected). */
  async start(): Promise<NbdLink> {
    const ino = await socketInode(this.#opts.socketPath);
    if (ino !== null) this.#allowed.add(ino);
    const link = await this.#connect();
    this.#use(link);
    return link;
  }

  /** The agent that re-adopted the binding serves the export at the socket path now. */
  permit(): void {
    void socketInode(this.#opts.socketPath).then((ino) => {
      if (ino !== null) this.#allowed.add(ino);
      this.#opts.log.info({ socket: this.#opts.socketPath }, "an agent re-adopted the binding");
      this.#wake?.();
    });
  }

  /** Send a request, held across losses of the agent; resolves with the agent's answer (or EIO past the hold). */
  send(type: number, flags: number, offset: number, length: number, payload?: Uint8Array): Promise<LinkReply> {
    if (this.#closed) return Promise.resolve({ error: NBD_ESHUTDOWN });
    if (this.#expired && !this.#link) return Promise.resolve({ error: NBD_ERRNO.EIO });
    return new Promise((resolve) => {
      const held: Held = { type, flags, offset, length, payload, resolve };
      if (this.#link) this.#transmit(this.#link, held);
      else this.#waiting.push(held);
    });
  }

  /** Stop: requests still waiting get ESHUTDOWN; those sent are answered by the agent. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#holdTimer);
    for (const held of this.#waiting.splice(0)) held.resolve({ error: NBD_ESHUTDOWN });
    this.#wake?.();
    await this.#reconnecting;
    this.#link?.close();
  }

  async #connect(): Promise<NbdLink> {
    const { socketPath, exportName, sizeBytes } = this.#opts;
    const link = await NbdLink.connect(socketPath, exportName);
    if (link.export.size !== sizeBytes) {
      link.destroy();
      throw new Error(`export ${JSON.stringify(exportName)} has ${link.export.size} bytes, the binding ${sizeBytes}`);
    }
    return link;
  }

  #use(link: NbdLink): void {
    this.#link = link;
    this.#expired = false;
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
    void link.closed.then((why) => this.#lost(link, why.message));
    const waiting = this.#waiting.splice(0);
    if (waiting.length > 0) this.#opts.log.info({ requests: waiting.length }, "sending the held requests to the agent");
    for (const held of waiting) this.#transmit(link, held);
  }

  #transmit(link: NbdLink, held: Held): void {
    this.#sent.add(held);
    link.request(held.type, held.flags, held.offset, held.length, held.payload).then(
      (reply) => {
        this.#sent.delete(held);
        // The agent is stopping (it drains): the request never reached the volume. Held for the next one.
        if (reply.error === NBD_ESHUTDOWN && !this.#closed) {
          this.#lost(link, "the agent is shutting down");
          this.#hold(held);
        } else held.resolve(reply);
      },
      (err: unknown) => {
        this.#sent.delete(held);
        if (!(err instanceof LinkClosed)) this.#opts.log.warn({ err }, "request failed on the link");
        this.#hold(held);
      },
    );
  }

  #hold(held: Held): void {
    if (this.#closed) held.resolve({ error: NBD_ESHUTDOWN });
    else if (this.#link) this.#transmit(this.#link, held);
    else if (this.#expired) held.resolve({ error: NBD_ERRNO.EIO });
    else this.#waiting.push(held);
  }

  /** `link` is of no more use: hold what comes, start the hold bound, look for the agent again. */
  #lost(link: NbdLink, why: string): void {
    if (this.#link !== link) return;
    // A draining agent still answers what it had and then closes the
    // connection itself: the link is left to it, only no longer used.
    this.#link = undefined;
    if (this.#closed) return;
    this.#opts.log.warn({ why, inFlight: this.#sent.size }, "lost the agent: holding requests");
    this.#holdTimer ??= setTimeout(() => this.#expire(), this.#opts.holdMs);
    this.#reconnecting ??= this.#reconnect().finally(() => {
      this.#reconnecting = undefined;
    });
  }

  #expire(): void {
    this.#holdTimer = undefined;
    if (this.#link) return;
    this.#expired = true;
    const failed = this.#waiting.splice(0);
    this.#opts.log.error(
      { holdSeconds: this.#opts.holdMs / 1000, failed: failed.length },
      "no agent took the held requests in time: they fail with EIO",
    );
    for (const held of failed) held.resolve({ error: NBD_ERRNO.EIO });
  }

  async #reconnect(): Promise<void> {
    let wait = 20;
    while (!this.#closed && !this.#link) {
      const ino = await socketInode(this.#opts.socketPath);
      if (ino !== null && this.#allowed.has(ino)) {
        try {
          const link = await this.#connect();
          if (this.#closed) {
            link.close();
            return;
          }
          this.#reconnections++;
          this.#opts.log.info({ reconnections: this.#reconnections, held: this.#waiting.length }, "connected to the agent again");
          this.#use(link);
          return;
        } catch (err) {
          this.#opts.log.debug({ err }, "the agent does not answer yet");
        }
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      wait = Math.min(wait * 2, MAX_RETRY_MS);
    }
  }
}

/** The BlockDevice nbdfuse is served: every request goes to the agent through the Upstream. */
export class RelayDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSizes: BlockSizes;
  readonly canMultiConn: boolean;
  readonly #upstream: Upstream;
  readonly #fastZero: boolean;

  constructor(upstream: Upstream, link: NbdLink, readOnly: boolean) {
    this.#upstream = upstream;
    this.size = link.export.size;
    this.readOnly = readOnly || (link.export.flags & TX.READ_ONLY) !== 0;
    this.blockSizes = link.export.blockSizes ?? DEFAULT_BLOCK_SIZES;
    this.canMultiConn = (link.export.flags & TX.CAN_MULTI_CONN) !== 0;
    this.#fastZero = (link.export.flags & TX.SEND_FAST_ZERO) !== 0;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return (await this.#call(CMD.READ, 0, offset, length)).data!;
  }

  async write(offset: number, data: Uint8Array, opts: WriteOptions = {}): Promise<void> {
    // `data` stays ours until this call settles, and it settles only on the agent's answer.
    await this.#call(CMD.WRITE, fua(opts), offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.#call(CMD.FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    await this.#call(CMD.TRIM, fua(opts), offset, length);
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    if (opts.fastZero && !this.#fastZero) throw new BlockError("ENOTSUP", "the agent does not zero fast");
    const flags = fua(opts) | (opts.noHole ? CMD_FLAG.NO_HOLE : 0) | (opts.fastZero ? CMD_FLAG.FAST_ZERO : 0);
    await this.#call(CMD.WRITE_ZEROES, flags, offset, length);
  }

  /** nbdfuse never asks; one allocated extent is always a true answer. */
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length, hole: false, zero: false }];
  }

  /** Advisory; the agent's cache is its own business. */
  async cache(): Promise<void> {}

  async close(): Promise<void> {}

  async #call(type: number, flags: number, offset: number, length: number, payload?: Uint8Array): Promise<LinkReply> {
    const reply = await this.#upstream.send(type, flags, offset, length, payload);
    if (reply.error !== 0) {
      const errno = ERRNO_OF.get(reply.error) ?? "EIO";
      throw new BlockError(errno, `the agent answered ${errno}`);
    }
    return reply;
  }
}

function fua(opts: WriteOptions): number {
  return opts.fua ? CMD_FLAG.FUA : 0;
}

async function socketInode(path: string): Promise<number | null> {
  const info = await lstat(path).catch(() => null);
  return info?.isSocket() ? info.ino : null;
}

/**
 * The relay process: connect to the agent's export, serve it on
 * `spec.listen`, write the pidfile, and run until SIGTERM/SIGINT. SIGHUP
 * says an agent re-adopted the binding. Resolves with the exit code.
 */
export async function runRelay(spec: RelaySpec, log: Logger): Promise<number> {
  const upstream = new Upstream({
    socketPath: spec.upstream,
    exportName: spec.exportName,
    sizeBytes: spec.sizeBytes,
    holdMs: (spec.holdSeconds ?? DEFAULT_HOLD_SECONDS) * 1000,
    log,
  });
  let link: NbdLink;
  try {
    link = await upstream.start();
  } catch (err) {
    log.error({ err, upstream: spec.upstream }, "cannot reach the agent's export");
    process.stderr.write(`pagedisk fuse-relay: ${spec.upstream}: ${(err as Error).message}\n`);
    return 1;
  }
  const device = new RelayDevice(upstream, link, spec.readOnly);
  const server = new NbdServer({
    exports: { [spec.exportName]: { device, blockSizes: device.blockSizes, readOnly: spec.readOnly } },
    logger: log,
    // nbdfuse's connections and nobody else's; they stay for as long as the binding does.
    handshakeTimeoutMs: 0,
  });
  process.on("SIGHUP", () => upstream.permit());
  const stopped = new Promise<string>((resolve) => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => resolve(signal));
  });
  await server.listen({ unix: spec.listen });
  await writeStateFile(spec.pidfile, `${process.pid}\n`);
  log.info({ listen: spec.listen, upstream: spec.upstream, size: device.size }, "fuse relay serving");
  const signal = await stopped;
  log.info({ signal }, "fuse relay stopping");
  await upstream.close();
  await server.close({ graceMs: 5_000 });
  return 0;
}
