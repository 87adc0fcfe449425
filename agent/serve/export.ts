/**
 * One volume served over NBD: the engine stack over a backend, an NbdServer
 * with that one export, listening on a unix socket (mode 0600) or TCP. Shared
 * by `pagedisk serve` (one volume per process, `exportVolume` opens the
 * engine) and the agent daemon (one export per attached volume, over the
 * replicated engine it opens itself: `serveVolume`), so both serve, fail and
 * stop a volume alike:
 *
 * - fail():  every request already gets EIO; the export goes away, nothing is flushed;
 * - drain(): stop accepting, let connections finish, flush, close.
 *
 * Neither touches a lease: whoever took it (serve's `--lease auto`, the
 * control plane for the agent) gives it back.
 *
 * Every export of the process charges one in-flight budget and assembles
 * payloads in one buffer pool, unless told otherwise: the agent runs a
 * server per volume, and the memory bound must hold for the process, not
 * for each volume.
 */
import { chmod } from "node:fs/promises";
import type { VolumeFailedEvent } from "../engine/failure.ts";
import type { ThrottleEvent } from "../engine/throttle.ts";
import { openVolume, type Volume, type VolumeOptions } from "../engine/volume.ts";
import type { Logger } from "../log.ts";
import { InflightBudget } from "../nbd/budget.ts";
import { BufferPool } from "../nbd/buffer-pool.ts";
import type { BlockDevice } from "../nbd/device.ts";
import {
  type BoundAddress,
  DEFAULT_INFLIGHT_BUDGET,
  type ListenAddress,
  NbdServer,
} from "../nbd/server.ts";

/** The socket could not be bound (in use, no such directory...). */
export class ExportListenError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = "ExportListenError";
  }
}

/** Memory and connection bounds of an export's server; each has a default (nbd/server.ts). */
export interface ServeLimits {
  /**
   * Bytes of requests and unsent replies all clients may hold at once. When
   * given, the export gets a budget of its own instead of the process's.
   */
  inflightBudget?: number;
  /** The same for one connection. */
  maxInflightPerConnection?: number;
  /** Connections open at once; more are refused. */
  maxConnections?: number;
  /** Connections in transmission on the export at once; more are refused. */
  maxConnectionsPerExport?: number;
}

/** Where and how an opened volume is served. */
export interface ServeOptions {
  /** Export name clients ask for (also the default export). */
  name: string;
  /** Shown to clients that list exports, and in logs. */
  description: string;
  listen: ListenAddress;
  log: Logger;
  limits?: ServeLimits;
}

/** The budget and pool every export of this process shares, made on first use. */
let processMemory: { budget: InflightBudget; pool: BufferPool } | undefined;

function sharedMemory(): { budget: InflightBudget; pool: BufferPool } {
  processMemory ??= {
    budget: new InflightBudget(DEFAULT_INFLIGHT_BUDGET),
    pool: new BufferPool(),
  };
  return processMemory;
}

export interface VolumeExportOptions extends ServeOptions {
  /** Fired once when the volume fails; call `fail()` from there. */
  onFailed: (event: VolumeFailedEvent) => void;
  onEvent?: (event: ThrottleEvent) => void;
  throttle?: VolumeOptions["throttle"];
}

export class VolumeExport {
  readonly name: string;
  readonly volume: Volume;
  readonly server: NbdServer;
  readonly address: BoundAddress;
  #ended: Promise<void> | undefined;

  /** @internal use exportVolume() or serveVolume() */
  constructor(name: string, volume: Volume, server: NbdServer, address: BoundAddress) {
    this.name = name;
    this.volume = volume;
    this.server = server;
    this.address = address;
  }

  /** The failed volume's export goes away; its clients' connections are closed. Idempotent. */
  fail(): Promise<void> {
    this.#ended ??= (async () => {
      await this.server.removeExport(this.name);
      await this.server.close();
      await this.volume.close().catch(() => {});
    })();
    return this.#ended;
  }

  /**
   * Stop accepting, let the connections finish, flush, close. Resolves with
   * the flush error when the last flush failed (the data may not be durable).
   */
  async drain(): Promise<Error | undefined> {
    let flushError: Error | undefined;
    this.#ended ??= (async () => {
      await this.server.close();
      try {
        await this.volume.flush();
      } catch (err) {
        flushError = err as Error;
      }
      await this.volume.close().catch(() => {});
    })();
    await this.#ended;
    return flushError;
  }
}

/**
 * Open the engine over `backend` and serve it. Rejects with the engine's
 * error when the volume cannot be opened (fatal ones fire `onFailed` too),
 * or with ExportListenError when the address cannot be bound.
 */
export async function exportVolume(
  backend: BlockDevice,
  opts: VolumeExportOptions,
): Promise<VolumeExport> {
  const volume = await openVolume(backend, {
    onFailed: opts.onFailed,
    ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
    ...(opts.throttle ? { throttle: opts.throttle } : {}),
  });
  try {
    return await serveVolume(volume, opts);
  } catch (err) {
    await volume.close().catch(() => {});
    throw err;
  }
}

/**
 * Serve a volume the caller opened (the agent's replicated engine, say) as
 * the one export of an NbdServer on `opts.listen`. Rejects with
 * ExportListenError when the address cannot be bound; the volume is then
 * still open, the caller's to close.
 */
export async function serveVolume(volume: Volume, opts: ServeOptions): Promise<VolumeExport> {
  const limits = opts.limits ?? {};
  const shared = sharedMemory();
  const server = new NbdServer({
    logger: opts.log,
    exports: { [opts.name]: { device: volume, description: opts.description } },
    defaultExport: opts.name,
    inflightBudget: limits.inflightBudget ?? shared.budget,
    pool: shared.pool,
    ...(limits.maxInflightPerConnection !== undefined
      ? { maxInflightBytes: limits.maxInflightPerConnection }
      : {}),
    ...(limits.maxConnections !== undefined ? { maxConnections: limits.maxConnections } : {}),
    ...(limits.maxConnectionsPerExport !== undefined
      ? { maxConnectionsPerExport: limits.maxConnectionsPerExport }
      : {}),
  });
  let address: BoundAddress;
  try {
    address = await server.listen(opts.listen);
    // The export carries the volume's data: only its owner (root) may connect.
    if ("unix" in address) await chmod(address.unix, 0o600);
  } catch (err) {
    await server.close().catch(() => {});
    throw new ExportListenError((err as Error).message, err);
  }
  return new VolumeExport(opts.name, volume, server, address);
}
