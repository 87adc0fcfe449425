/**
 * One undici Pool per storage endpoint origin, shared by every blob on it
 * and reference counted: keep-alive connections to an account are reused by
 * all its volumes, and the pool closes when the last user lets go.
 *
 * This folder is the only one that imports undici.
 */
import { Pool } from "undici";

/** Connections per origin unless told otherwise: enough for NBD queue depth 32. */
export const DEFAULT_CONNECTIONS = 32;

export interface PoolOptions {
  /** Upper bound of concurrent connections to the origin. */
  connections?: number;
  /** How long an idle keep-alive connection is kept, in ms (a server hint may shorten it). */
  keepAliveTimeoutMs?: number;
}

/** A reference to a shared pool; `release()` once when done. */
export interface PoolLease {
  readonly pool: Pool;
  release(): Promise<void>;
}

interface Entry {
  pool: Pool;
  refs: number;
}

export class PoolRegistry {
  readonly #entries = new Map<string, Entry>();

  /**
   * The pool for `origin`, created on first use. Options apply when the pool
   * is created; later callers share it as it is.
   */
  acquire(origin: string, opts: PoolOptions = {}): PoolLease {
    const key = new URL(origin).origin;
    let entry = this.#entries.get(key);
    if (!entry) {
      const pool = new Pool(key, {
        connections: opts.connections ?? DEFAULT_CONNECTIONS,
        pipelining: 1,
        keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
      });
      entry = { pool, refs: 0 };
      this.#entries.set(key, entry);
    }
    entry.refs++;
    const held = entry;
    let released = false;
    return {
      pool: held.pool,
      release: async () => {
        if (released) return;
        released = true;
        held.refs--;
        if (held.refs > 0) return;
        if (this.#entries.get(key) === held) this.#entries.delete(key);
        // close() lets requests still in flight finish, then ends the sockets.
        await held.pool.close();
      },
    };
  }

  /** Number of origins with an open pool. */
  get size(): number {
    return this.#entries.size;
  }
}

/** The process-wide registry the agent uses. */
export const sharedPools = new PoolRegistry();
