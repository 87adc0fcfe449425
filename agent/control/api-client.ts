/**
 * Admin client of the control plane API on Node's global `fetch`, typed with
 * `contract/`. Only types are imported from there, so zod stays out of the
 * agent bundle; the server validates every request.
 *
 *   const api = new ApiClient(await resolveApiConfig());
 *   const { items } = await api.listVolumes();
 *
 * Every failure is an `ApiClientError` with the API's stable `code`. A 429
 * (too many changes; nothing was done) is sent again after the
 * `Retry-After` the API asks for, while that fits in the request's time.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { z } from "zod";
import type { Attachment } from "../../contract/attachment.ts";
import type { ApiErrorCode } from "../../contract/errors.ts";
import type { EventPage, EventQuery } from "../../contract/event.ts";
import type { Node, NodeList } from "../../contract/node.ts";
import type { Pool, PoolAnnotationsPatch, PoolCreate, PoolList } from "../../contract/pool.ts";
import type {
  OrphanDeleteRequest,
  OrphanDeleteResult,
  Reconciliation,
} from "../../contract/reconciliation.ts";
import type { IssuedToken, JoinTokenList, TokenCreate } from "../../contract/token.ts";
import type { Volume, VolumeCreate, VolumeList, VolumePatch } from "../../contract/volume.ts";
import type { ApiConfig } from "./api-config.ts";

/** Codes of failures that never reached the API or got no API answer. */
export type ClientOnlyCode = "Unreachable" | "BadResponse";

/**
 * A request that failed: an API error (`status` 4xx/5xx, `code` from the
 * contract), no answer (`Unreachable`, status 0) or an answer that is not
 * the API's (`BadResponse`, e.g. a proxy's HTML page).
 */
export class ApiClientError extends Error {
  readonly status: number;
  readonly code: ApiErrorCode | ClientOnlyCode;
  readonly details: unknown;
  /** How long the answer's `Retry-After` asked to wait, in milliseconds, if it did. */
  readonly retryAfterMs: number | undefined;
  constructor(
    status: number,
    code: ApiErrorCode | ClientOnlyCode,
    message: string,
    details?: unknown,
    retryAfterMs?: number,
  ) {
    super(message);
    this.name = "ApiClientError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Request bodies as callers write them: fields with defaults may be left out. */
export type PoolCreateBody = z.input<typeof PoolCreate>;
export type PoolAnnotationsPatchBody = z.input<typeof PoolAnnotationsPatch>;
export type OrphanDeleteBody = z.input<typeof OrphanDeleteRequest>;
export type VolumeCreateBody = z.input<typeof VolumeCreate>;
export type VolumePatchBody = z.input<typeof VolumePatch>;
export type TokenCreateBody = z.input<typeof TokenCreate>;
export type EventFilter = Partial<Omit<EventQuery, "continuation">> & { continuation?: string };

/** Long enough for a volume create on a slow account; short enough not to hang a script. */
const DEFAULT_TIMEOUT_MS = 60_000;
/** Reconciliation lists (or deletes from) whole containers: many pages on a large account. */
const SCAN_TIMEOUT_MS = 300_000;

export interface ApiClientOptions extends ApiConfig {
  timeoutMs?: number;
}

export class ApiClient {
  readonly apiUrl: string;
  readonly #apiKey: string;
  readonly #timeoutMs: number;

  constructor(opts: ApiClientOptions) {
    this.apiUrl = opts.apiUrl.replace(/\/+$/, "");
    this.#apiKey = opts.apiKey;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  listPools = () => this.#call<PoolList>("GET", "/pools");
  getPool = (name: string) => this.#call<Pool>("GET", `/pools/${seg(name)}`);
  createPool = (body: PoolCreateBody) => this.#call<Pool>("POST", "/pools", body);
  removePool = (name: string) => this.#call<undefined>("DELETE", `/pools/${seg(name)}`);
  /** Start moving every replica off the pool; the pool after the first pass of its release. */
  releasePool = (name: string) => this.#call<Pool>("POST", `/pools/${seg(name)}/release`);
  /** Set (value) or remove (null) annotations; `action` is acted on, not stored. */
  annotatePool = (name: string, patch: PoolAnnotationsPatchBody) =>
    this.#call<Pool>("PATCH", `/pools/${seg(name)}/annotations`, patch);

  /** Orphans and missing blobs of every pool, or of one; deletes nothing. */
  reconcile = (pool?: string) =>
    this.#call<Reconciliation>(
      "GET",
      `/reconciliation${pool === undefined ? "" : `?pool=${seg(pool)}`}`,
      undefined,
      SCAN_TIMEOUT_MS,
    );
  /** Delete orphans of one pool, each checked again by the control plane. */
  deleteOrphans = (body: OrphanDeleteBody) =>
    this.#call<OrphanDeleteResult>(
      "POST",
      "/reconciliation/delete-orphans",
      body,
      SCAN_TIMEOUT_MS,
    );

  listVolumes = () => this.#call<VolumeList>("GET", "/volumes");
  getVolume = (name: string) => this.#call<Volume>("GET", `/volumes/${seg(name)}`);
  createVolume = (body: VolumeCreateBody) => this.#call<Volume>("POST", "/volumes", body);
  updateVolume = (name: string, patch: VolumePatchBody) =>
    this.#call<Volume>("PATCH", `/volumes/${seg(name)}`, patch);
  deleteVolume = (name: string, force = false) =>
    this.#call<undefined>("DELETE", `/volumes/${seg(name)}${force ? "?force=true" : ""}`);
  /** Attach to `node`, or, without one, to the node the control plane places it on. */
  attachVolume = (name: string, node?: string) =>
    this.#call<Attachment>(
      "POST",
      `/volumes/${seg(name)}/attach`,
      node === undefined ? {} : { node },
    );
  detachVolume = (name: string, force = false) =>
    this.#call<Volume>("POST", `/volumes/${seg(name)}/detach${force ? "?force=true" : ""}`);

  listNodes = () => this.#call<NodeList>("GET", "/nodes");
  getNode = (name: string) => this.#call<Node>("GET", `/nodes/${seg(name)}`);
  cordonNode = (name: string) => this.#call<Node>("POST", `/nodes/${seg(name)}/cordon`);
  uncordonNode = (name: string) => this.#call<Node>("POST", `/nodes/${seg(name)}/uncordon`);
  removeNode = (name: string) => this.#call<undefined>("DELETE", `/nodes/${seg(name)}`);

  createToken = (body: TokenCreateBody = {}) => this.#call<IssuedToken>("POST", "/tokens", body);
  listTokens = () => this.#call<JoinTokenList>("GET", "/tokens");
  revokeToken = (id: string) => this.#call<undefined>("DELETE", `/tokens/${seg(id)}`);

  listEvents = (filter: EventFilter = {}) => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filter)) {
      if (value !== undefined) query.set(key, String(value));
    }
    const qs = query.size > 0 ? `?${query}` : "";
    return this.#call<EventPage>("GET", `/events${qs}`);
  };

  /** `atLeastMs`: calls known to be slow get that long even from a client with a short timeout. */
  #call<T>(method: string, path: string, body?: unknown, atLeastMs = 0): Promise<T> {
    return requestApi<T>({
      method,
      url: `${this.apiUrl}${path}`,
      bearer: this.#apiKey,
      body,
      timeoutMs: Math.max(this.#timeoutMs, atLeastMs),
    });
  }
}

/** Names in paths are DNS labels already; encoding keeps a typo from changing the route. */
function seg(name: string): string {
  return encodeURIComponent(name);
}

/** One request to the API, as the admin client and the node client make it. */
export interface ApiRequest {
  method: string;
  url: string;
  /** The admin key, a join token or a node credential. */
  bearer: string;
  /** Sent as JSON when given. */
  body?: unknown;
  timeoutMs: number;
  /** The caller's own cancellation; its abort is passed on as is, not as an API failure. */
  signal?: AbortSignal | undefined;
}

/**
 * Send one request. Resolves with the body of a 2xx answer as the API sent
 * it (undefined for 204 No Content); rejects with an `ApiClientError` for
 * anything else, or with the signal's reason when the caller aborted. A
 * 429 is sent again after its `Retry-After` if that wait ends within
 * `timeoutMs` of the first try; else it is the error, `retryAfterMs` set.
 */
export async function requestApi<T>(req: ApiRequest): Promise<T> {
  const giveUpAt = performance.now() + req.timeoutMs;
  const timeout = AbortSignal.timeout(req.timeoutMs);
  for (;;) {
    try {
      return await requestOnce<T>(req, timeout);
    } catch (err) {
      // A 429 changed nothing, so sending it again is safe whatever the method.
      const wait = err instanceof ApiClientError && err.status === 429 ? err.retryAfterMs : undefined;
      if (wait === undefined || performance.now() + wait >= giveUpAt) throw err;
      try {
        await sleep(wait, undefined, { signal: req.signal });
      } catch {
        // Only the caller's signal ends the wait early: its abort goes on as is.
        throw req.signal?.reason ?? err;
      }
    }
  }
}

async function requestOnce<T>(req: ApiRequest, timeout: AbortSignal): Promise<T> {
  const { method, url, body, signal } = req;
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, {
      method,
      headers: {
        authorization: `Bearer ${req.bearer}`,
        accept: "application/json",
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    text = await res.text();
  } catch (err) {
    // The caller's own abort is not the control plane's fault: pass it on as is.
    if (signal?.aborted) throw signal.reason;
    throw new ApiClientError(0, "Unreachable", `cannot reach ${url}: ${reason(err)}`);
  }
  if (res.ok) {
    if (res.status === 204) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiClientError(res.status, "BadResponse", `${method} ${url}: answer is not JSON`);
    }
  }
  throw errorOf(res, text, `${method} ${url}`);
}

function errorOf(res: Response, text: string, what: string): ApiClientError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not the API speaking (a proxy, a gateway, a wrong URL).
  }
  const error = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } })
    ?.error;
  if (error && typeof error.code === "string" && typeof error.message === "string") {
    // A code from a newer server than this client is passed on as is.
    return new ApiClientError(
      res.status,
      error.code as ApiErrorCode,
      error.message,
      error.details,
      retryAfterMs(res.headers.get("retry-after")),
    );
  }
  return new ApiClientError(
    res.status,
    "BadResponse",
    `${what}: HTTP ${res.status} ${res.statusText} without an API error body (is the URL the API's /api/v1?)`,
  );
}

/** `Retry-After` in milliseconds: seconds, or an HTTP date; undefined when absent or unreadable. */
function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** fetch says "fetch failed"; the cause (ECONNREFUSED, a timeout) is what helps. */
function reason(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === "TimeoutError") return "timed out";
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof Error) return cause.message;
    return err.message;
  }
  return String(err);
}
