/**
 * Sends one REST call for one blob: builds the request path with the SAS and
 * the server timeout, applies the client timeout, classifies failures into
 * StorageError and retries the Transient ones per `retry.ts`.
 *
 * Every call is idempotent at this level (Put Page, Clear Pages, ranged Get,
 * lease calls with a proposed id), so resending one whose answer was lost
 * does no harm by itself. What can do harm is the first attempt landing
 * after the resend, or after a newer write: so a call that changes the blob
 * and whose attempt ended in doubt is never resent, and nothing that touches
 * the same thing is sent, until that attempt can no longer land
 * (in-doubt.ts). Page writes are retried by the engine above, which knows
 * how long the volume or the replica may wait: they fail at once with a
 * Retry-After that covers the doubt. Other changes (lease, metadata, create)
 * have no engine above them: they wait the doubt out here, then retry.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { Dispatcher } from "undici";
import { fromNetworkError, fromResponse, leavesInDoubt } from "./classify.ts";
import { type Clock, systemClock } from "./clock.ts";
import { StorageError } from "./errors.ts";
import { doubtKey, type InDoubtWrites, sharedInDoubt, type Touches } from "./in-doubt.ts";
import type { BlobLocation } from "./location.ts";
import { type PoolLease, type PoolOptions, type PoolRegistry, sharedPools } from "./pool.ts";
import { calculateDelay, DEFAULT_RETRY, type RetryOptions, shouldRetry } from "./retry.ts";
import { API_VERSION, type SasSource } from "./sas.ts";
import { parseErrorBody } from "./xml.ts";

export interface TransportOptions extends PoolOptions {
  /** Registry to take the origin's pool from; the process-wide one by default. */
  pools?: PoolRegistry;
  /**
   * The client's own give-up time, in ms: how long to wait for response
   * headers (from when the request starts going out; an upload that keeps
   * moving does not count against it), then between body chunks. Must be
   * longer than the server timeout.
   */
  timeoutMs?: number;
  /** Server timeout sent with every request (`timeout=`), whole seconds, at least 1. */
  serverTimeoutSec?: number;
  /** Added to the server timeout before an abandoned attempt counts as unable to land, in ms. */
  inDoubtMarginMs?: number;
  /** Where abandoned attempts are kept; the process-wide registry by default. */
  inDoubt?: InDoubtWrites;
  retry?: RetryOptions;
  clock?: Clock;
  /** Source of jitter for retry delays. */
  random?: () => number;
}

/** One REST call. `query` excludes the SAS, which is appended per attempt. */
export interface BlobCall {
  method: "GET" | "HEAD" | "PUT" | "DELETE";
  query?: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Names the operation in error messages, e.g. "Put Page 0+4096". */
  op: string;
  /** What the call changes; absent for calls that change nothing (reads). */
  touches?: Touches;
  /**
   * Whoever called retries this one (the engine, for page writes): an
   * attempt left in doubt fails at once, with a Retry-After covering the
   * doubt, instead of being waited out and resent here.
   */
  retriedAbove?: boolean;
}

/** A 2xx response, handed to the reader that consumes its body. */
export type OkResponse = Dispatcher.ResponseData;

/**
 * Server timeout of every request, in seconds. The service allows at most
 * 30 s for most operations and "10 minutes per megabyte" for writes, which
 * without a `timeout=` lets it work on a 4 MiB Put Page for most of an hour
 * ("Setting timeouts for Blob service operations"). 20 s is two orders of
 * magnitude above a healthy Put Page or ranged Get of 4 MiB, lets a 4 MiB
 * upload through at 1.7 Mbit/s, and leaves Get Page Ranges over a
 * fragmented segment and a Clear Pages over a whole disk time to finish.
 * It is also how long an abandoned write keeps its range blocked (plus the
 * margin below), so shorter would stall less after a network failure but
 * fail more slow-but-healthy calls with OperationTimedOut.
 */
export const DEFAULT_SERVER_TIMEOUT_SEC = 20;

/**
 * The client's give-up time, 10 s above the server timeout: while the
 * network works, the service's 500 OperationTimedOut (a verdict) reaches us
 * before we give up, and only a broken network leaves a request in doubt.
 */
export const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * Added to an abandoned attempt's server timeout: packets of it already on
 * the wire when we gave up may still arrive this late, and timers may fire
 * a little early.
 */
export const DEFAULT_IN_DOUBT_MARGIN_MS = 2_000;

/**
 * How much slower the service's clock may run than ours, as a fraction.
 * Quartz drifts by well under 0.1%; 1% leaves room for poor VM clocks.
 */
export const CLOCK_RATE_TOLERANCE = 0.01;

/** How long an attempt abandoned under server timeout `serverSec` may still land, in ms. */
function doubtWindowMs(serverSec: number, marginMs: number): number {
  return Math.ceil(serverSec * 1000 * (1 + CLOCK_RATE_TOLERANCE) + marginMs);
}

/** How long an abandoned attempt may still land, at the defaults: 22.2 s. */
export const DEFAULT_DOUBT_MS = doubtWindowMs(DEFAULT_SERVER_TIMEOUT_SEC, DEFAULT_IN_DOUBT_MARGIN_MS);

/** Errors of attempts left in doubt (so send() knows not to resend them at once). */
const abandoned = new WeakSet<StorageError>();

export class BlobTransport {
  readonly location: BlobLocation;
  readonly #sas: SasSource;
  readonly #lease: PoolLease;
  readonly #timeoutMs: number;
  readonly #serverTimeoutSec: number;
  /** How long an abandoned attempt may still land, in ms. */
  readonly #doubtMs: number;
  readonly #inDoubt: InDoubtWrites;
  /** Key of this blob in the registry. */
  readonly #blobKey: string;
  readonly #retry: RetryOptions;
  readonly #clock: Clock;
  readonly #random: () => number;
  #closed = false;

  constructor(location: BlobLocation, sas: SasSource, opts: TransportOptions = {}) {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const serverSec = opts.serverTimeoutSec ?? DEFAULT_SERVER_TIMEOUT_SEC;
    const marginMs = opts.inDoubtMarginMs ?? DEFAULT_IN_DOUBT_MARGIN_MS;
    if (!Number.isSafeInteger(serverSec) || serverSec < 1) {
      throw new RangeError(`server timeout must be a whole number of seconds, at least 1; got ${serverSec}`);
    }
    if (!(timeoutMs > serverSec * 1000)) {
      throw new RangeError(
        `client timeout ${timeoutMs} ms must be longer than the server timeout of ${serverSec} s`,
      );
    }
    if (!(marginMs >= 0)) throw new RangeError(`in-doubt margin must be at least 0 ms; got ${marginMs}`);
    this.location = location;
    this.#sas = sas;
    this.#timeoutMs = timeoutMs;
    this.#serverTimeoutSec = serverSec;
    this.#doubtMs = doubtWindowMs(serverSec, marginMs);
    this.#inDoubt = opts.inDoubt ?? sharedInDoubt;
    this.#blobKey = doubtKey(location);
    // Last: nothing may throw once the pool is referenced.
    this.#lease = (opts.pools ?? sharedPools).acquire(location.origin, opts);
    this.#retry = opts.retry ?? DEFAULT_RETRY;
    this.#clock = opts.clock ?? systemClock;
    this.#random = opts.random ?? Math.random;
  }

  /**
   * Send `call`, retrying Transient failures, and hand the 2xx response to
   * `read`. A failure while reading the body is retried like any other.
   */
  async send<T>(call: BlobCall, read: (res: OkResponse) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (call.touches) await this.#settled(call.touches);
      // Checked here, not left to undici: a closed pool's error would look Transient and be retried.
      if (this.#closed) throw new StorageError("Invalid", `${call.op}: client is closed`);
      try {
        return await this.#once(call, read);
      } catch (err) {
        if (!shouldRetry(err, attempt, this.#retry)) throw err;
        if (call.retriedAbove && abandoned.has(err as StorageError)) throw err;
        // Either way, the next attempt first waits out this one's doubt (#settled).
        const retryAfter = err instanceof StorageError ? err.retryAfterMs : undefined;
        await this.#clock.sleep(calculateDelay(attempt, this.#retry, retryAfter, this.#random));
      }
    }
  }

  /**
   * Wait until no abandoned attempt that overlaps `touches` can still land.
   * Each wait covers every doubt known when it began; only a doubt that ends
   * later makes another. (So a test clock whose sleeps return at once does
   * not spin.) This orders a call after the doubts that exist when it starts;
   * calls that overlap and run at the same time are ordered by nobody, and
   * the engine never sends such (coalesce.ts).
   */
  async #settled(touches: Touches): Promise<void> {
    let waited = Number.NEGATIVE_INFINITY;
    for (;;) {
      const until = this.#inDoubt.settledAt(this.#blobKey, touches);
      if (until === undefined || until <= waited) return;
      await this.#clock.sleep(Math.max(0, until - this.#inDoubt.now()));
      waited = until;
    }
  }

  /**
   * `err` ended an attempt of `call`: when the call changes the blob and
   * the attempt is left in doubt, record it, and say how long it may still
   * land in the error's Retry-After.
   */
  #verdict(call: BlobCall, err: StorageError): StorageError {
    if (!call.touches || !leavesInDoubt(err)) return err;
    this.#inDoubt.abandon(this.#blobKey, call.touches, this.#doubtMs);
    const doubt = new StorageError(
      err.code,
      `${err.message} (outcome unknown: it may still land within ${this.#doubtMs} ms, so nothing overlapping it is sent before then)`,
      {
        status: err.status,
        azureCode: err.azureCode,
        retryAfterMs: Math.max(this.#doubtMs, err.retryAfterMs ?? 0),
        requestId: err.requestId,
        cause: err,
      },
    );
    abandoned.add(doubt);
    return doubt;
  }

  /** Drop this blob's reference to the shared pool. */
  close(): Promise<void> {
    this.#closed = true;
    return this.#lease.release();
  }

  async #once<T>(call: BlobCall, read: (res: OkResponse) => Promise<T>): Promise<T> {
    const sas = this.#sas.query();
    const query = [call.query, `timeout=${this.#serverTimeoutSec}`, sas]
      .filter((q) => q !== undefined && q !== "")
      .join("&");
    const headers: Record<string, string> = { "x-ms-version": API_VERSION, ...call.headers };
    // Azure wants an explicit Content-Length on every PUT, including empty ones.
    if (call.method === "PUT" && !call.body) headers["content-length"] = "0";
    let res: OkResponse;
    try {
      res = await this.#lease.pool.request({
        path: `${this.location.path}?${query}`,
        method: call.method,
        headers,
        body: call.body ?? null,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      });
    } catch (err) {
      throw this.#verdict(call, fromNetworkError(err, call.op));
    }
    if (res.statusCode >= 300) throw this.#verdict(call, await errorOf(res, call.op));
    // From here on the service has given its verdict: a failure reading the body leaves nothing in doubt.
    try {
      return await read(res);
    } catch (err) {
      if (err instanceof StorageError) throw err;
      // A malformed body is not the network's fault; retrying would not help.
      if (err instanceof SyntaxError)
        throw new StorageError("Invalid", `${call.op}: ${err.message}`, { cause: err });
      throw fromNetworkError(err, call.op);
    } finally {
      // Make sure the socket goes back to the pool even when the reader did not drain it.
      if (!res.body.destroyed && !res.body.readableEnded) res.body.dump().catch(() => {});
    }
  }
}

/** Read an error response (body included) into a StorageError. */
async function errorOf(res: OkResponse, op: string): Promise<StorageError> {
  let body = "";
  try {
    body = await res.body.text();
  } catch {
    // The status line is enough to classify; a lost error body changes nothing.
  }
  const parsed = parseErrorBody(body);
  return fromResponse(
    {
      status: res.statusCode,
      azureCode: header(res.headers, "x-ms-error-code") ?? parsed.code,
      retryAfter: header(res.headers, "retry-after"),
      message: parsed.message,
      requestId: header(res.headers, "x-ms-request-id"),
    },
    op,
  );
}

/** A response header as one string. */
export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}
