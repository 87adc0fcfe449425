/**
 * The agent's client of the control plane: join (with a join token), then
 * reports and desired state (with the node's credential, for itself only).
 * Heartbeats do not come here: they go to the liveness table
 * (liveness-beat.ts). Node's global `fetch`, typed with `contract/` (types
 * only: zod stays out of the agent bundle; the server validates every
 * request). No request is held open by the control plane.
 *
 *   const client = new NodeClient({ apiUrl, node, credential });
 *   const node = await client.report({ agentVersion, volumes, events });
 *   const desired = await client.desired({ signal });
 *
 * Every failure is an `ApiClientError` (the admin client's class) with the
 * API's stable `code`; `isCredentialRejected()` tells the ones that mean the
 * node may no longer act (removed, or its credential revoked).
 */
import type { z } from "zod";
import type {
  DesiredState,
  JoinRequest,
  JoinResponse,
  NodeReport,
  ReportAnswer,
} from "../../contract/node.ts";
import { ApiClientError, requestApi } from "./api-client.ts";

export type JoinBody = z.input<typeof JoinRequest>;
export type ReportBody = z.input<typeof NodeReport>;

/** A report or a fetch that takes longer than this is given up (and retried). */
const DEFAULT_TIMEOUT_MS = 15_000;

export interface NodeClientOptions {
  /** The API's root, e.g. `http://127.0.0.1:7071/api/v1`. */
  apiUrl: string;
  /** Set once joined. */
  node?: string;
  credential?: string;
  timeoutMs?: number;
}

export interface DesiredQuery {
  signal?: AbortSignal | undefined;
}

export class NodeClient {
  readonly apiUrl: string;
  readonly #node: string | undefined;
  readonly #credential: string | undefined;
  readonly #timeoutMs: number;

  constructor(opts: NodeClientOptions) {
    this.apiUrl = opts.apiUrl.replace(/\/+$/, "");
    this.#node = opts.node;
    this.#credential = opts.credential;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** Register this VM; the credential in the answer is shown this once. */
  join(token: string, body: JoinBody, signal?: AbortSignal): Promise<JoinResponse> {
    return this.#call<JoinResponse>("POST", "/nodes/join", token, body, this.#timeoutMs, signal);
  }

  /** Report; the answer is the node's desired generation. */
  report(body: ReportBody, signal?: AbortSignal): Promise<ReportAnswer> {
    return this.#call<ReportAnswer>(
      "POST",
      `/nodes/${this.#self()}/report`,
      this.#secret(),
      body,
      this.#timeoutMs,
      signal,
    );
  }

  /** What the node should serve now, and where its heartbeats go. */
  desired(query: DesiredQuery = {}): Promise<DesiredState> {
    return this.#call<DesiredState>(
      "GET",
      `/nodes/${this.#self()}/desired`,
      this.#secret(),
      undefined,
      this.#timeoutMs,
      query.signal,
    );
  }

  #self(): string {
    if (!this.#node) throw new Error("NodeClient: not joined (no node name)");
    return encodeURIComponent(this.#node);
  }

  #secret(): string {
    if (!this.#credential) throw new Error("NodeClient: not joined (no credential)");
    return this.#credential;
  }

  #call<T>(
    method: string,
    path: string,
    bearer: string,
    body: unknown,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    return requestApi<T>({ method, url: `${this.apiUrl}${path}`, bearer, body, timeoutMs, signal });
  }
}

/**
 * 401 or 403 from the node endpoints: the node was removed or its credential
 * revoked (or it asked for another node). Retrying will not help.
 */
export function isCredentialRejected(err: unknown): err is ApiClientError {
  return err instanceof ApiClientError && (err.status === 401 || err.status === 403);
}
