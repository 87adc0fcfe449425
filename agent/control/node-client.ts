/**
 * The agent's client of the control plane: join (with a join token), then
 * heartbeat and desired state (with the node's credential, for itself only).
 * Node's global `fetch`, typed with `contract/` (types only: zod stays out of
 * the agent bundle; the server validates every request).
 *
 *   const client = new NodeClient({ apiUrl, node, credential });
 *   const node = await client.heartbeat({ agentVersion, volumes, events });
 *   const desired = await client.desired({ after: 3, waitSeconds: 20, signal });
 *
 * Every failure is an `ApiClientError` (the admin client's class) with the
 * API's stable `code`; `isCredentialRejected()` tells the ones that mean the
 * node may no longer act (removed, or its credential revoked).
 */
import type { z } from "zod";
import type {
  DesiredState,
  Heartbeat,
  JoinRequest,
  JoinResponse,
  Node,
} from "../../contract/node.ts";
import { ApiClientError, requestApi } from "./api-client.ts";

export type JoinBody = z.input<typeof JoinRequest>;
export type HeartbeatBody = z.input<typeof Heartbeat>;

/** A heartbeat or a plain fetch that takes longer than this is given up (and retried). */
const DEFAULT_TIMEOUT_MS = 15_000;
/** Added to a long poll's own wait before the request is given up on. */
const LONG_POLL_SLACK_MS = 10_000;

export interface NodeClientOptions {
  /** The API's root, e.g. `http://127.0.0.1:7071/api/v1`. */
  apiUrl: string;
  /** Set once joined. */
  node?: string;
  credential?: string;
  timeoutMs?: number;
}

export interface DesiredQuery {
  /** The generation the agent has; the answer is held while the node's is the same. */
  after?: number | undefined;
  /** How long the control plane may hold the answer (0..25). */
  waitSeconds?: number | undefined;
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

  /** Report; the answer is the node as recorded (with its desired generation). */
  heartbeat(body: HeartbeatBody, signal?: AbortSignal): Promise<Node> {
    return this.#call<Node>(
      "POST",
      `/nodes/${this.#self()}/heartbeat`,
      this.#secret(),
      body,
      this.#timeoutMs,
      signal,
    );
  }

  /** What the node should serve; held by the control plane while nothing changed. */
  desired(query: DesiredQuery = {}): Promise<DesiredState> {
    const params = new URLSearchParams();
    if (query.after !== undefined) params.set("after", String(query.after));
    if (query.waitSeconds !== undefined) params.set("waitSeconds", String(query.waitSeconds));
    const qs = params.size > 0 ? `?${params}` : "";
    const timeoutMs = this.#timeoutMs + (query.waitSeconds ?? 0) * 1000 + LONG_POLL_SLACK_MS;
    return this.#call<DesiredState>(
      "GET",
      `/nodes/${this.#self()}/desired${qs}`,
      this.#secret(),
      undefined,
      timeoutMs,
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
