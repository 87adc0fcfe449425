/**
 * Sends one REST call for one blob: builds the request path with the SAS,
 * applies the per-request timeout, classifies failures into StorageError and
 * retries the Transient ones per `retry.ts`. Everything is idempotent at this
 * level (Put Page, Clear Pages, ranged Get, lease calls with a proposed id),
 * so resending a request whose answer was lost is always safe.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { Dispatcher } from "undici";
import { fromNetworkError, fromResponse } from "./classify.ts";
import { type Clock, systemClock } from "./clock.ts";
import { StorageError } from "./errors.ts";
import type { BlobLocation } from "./location.ts";
import { type PoolLease, type PoolOptions, type PoolRegistry, sharedPools } from "./pool.ts";
import { calculateDelay, DEFAULT_RETRY, type RetryOptions, shouldRetry } from "./retry.ts";
import { API_VERSION, type SasSource } from "./sas.ts";
import { parseErrorBody } from "./xml.ts";

export interface TransportOptions extends PoolOptions {
  /** Registry to take the origin's pool from; the process-wide one by default. */
  pools?: PoolRegistry;
  /** Time to wait for response headers, and then between body chunks, in ms. */
  timeoutMs?: number;
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
}

/** A 2xx response, handed to the reader that consumes its body. */
export type OkResponse = Dispatcher.ResponseData;

/** Default per-request timeout: long enough for a 4 MiB Put Page on a slow link. */
export const DEFAULT_TIMEOUT_MS = 30_000;

export class BlobTransport {
  readonly location: BlobLocation;
  readonly #sas: SasSource;
  readonly #lease: PoolLease;
  readonly #timeoutMs: number;
  readonly #retry: RetryOptions;
  readonly #clock: Clock;
  readonly #random: () => number;
  #closed = false;

  constructor(location: BlobLocation, sas: SasSource, opts: TransportOptions = {}) {
    this.location = location;
    this.#sas = sas;
    this.#lease = (opts.pools ?? sharedPools).acquire(location.origin, opts);
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
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
      // Checked here, not left to undici: a closed pool's error would look Transient and be retried.
      if (this.#closed) throw new StorageError("Invalid", `${call.op}: client is closed`);
      try {
        return await this.#once(call, read);
      } catch (err) {
        if (!shouldRetry(err, attempt, this.#retry)) throw err;
        const retryAfter = err instanceof StorageError ? err.retryAfterMs : undefined;
        await this.#clock.sleep(calculateDelay(attempt, this.#retry, retryAfter, this.#random));
      }
    }
  }

  /** Drop this blob's reference to the shared pool. */
  close(): Promise<void> {
    this.#closed = true;
    return this.#lease.release();
  }

  async #once<T>(call: BlobCall, read: (res: OkResponse) => Promise<T>): Promise<T> {
    const sas = this.#sas.query();
    const query = [call.query, sas].filter((q) => q !== undefined && q !== "").join("&");
    const headers: Record<string, string> = { "x-ms-version": API_VERSION, ...call.headers };
    // Azure wants an explicit Content-Length on every PUT, including empty ones.
    if (call.method === "PUT" && !call.body) headers["content-length"] = "0";
    let res: OkResponse;
    try {
      res = await this.#lease.pool.request({
        path: query ? `${this.location.path}?${query}` : this.location.path,
        method: call.method,
        headers,
        body: call.body ?? null,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      });
    } catch (err) {
      throw fromNetworkError(err, call.op);
    }
    if (res.statusCode >= 300) throw await errorOf(res, call.op);
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
