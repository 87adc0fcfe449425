/**
 * An in-process HTTP reverse proxy in front of Azurite whose behaviour a test
 * switches at will: pass through, answer like a throttled or overloaded Azure
 * (503 ServerBusy, 500 OperationTimedOut, with Azure's XML error body), cut
 * connections, delay or hold requests. It counts requests by kind, so tests
 * can assert how many Put Page calls reached the service, and the seconds
 * requests were open.
 *
 * It also keeps Azure's server timeout, which Azurite ignores: a request
 * whose `timeout=N` (seconds) has passed since it arrived when the proxy
 * comes to forward it (after a delay, a hang or a hold) is answered 500
 * OperationTimedOut and never reaches Azurite, as the service commits
 * nothing once its timeout has passed. Requests without `timeout` are
 * counted (`untimed()`).
 *
 * With `azurePolicies`, it also keeps Azure's timing of stored access
 * policies, where Azurite differs: see `AzurePolicies`.
 *
 *   const proxy = await startFaultProxy(azurite.blobEndpoint);
 *   proxy.inject({ fault: { type: "busy" }, only: ["putPage"] });
 *   await proxy.waitFor(() => proxy.faulted("putPage") >= 3);
 *   proxy.clear();
 */
import { randomUUID } from "node:crypto";
import { EventEmitter, once } from "node:events";
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import {
  BlobSASPermissions,
  type BlobSASSignatureValues,
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  type SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { DEV_ACCOUNT_KEY } from "../../agent/pageblob/location.ts";

/** What a request does, as far as counting and matching are concerned. */
export type RequestKind =
  | "putPage"
  | "clearPages"
  | "getBlob"
  | "pageRanges"
  | "properties"
  | "setProperties"
  | "putBlob"
  | "lease"
  | "delete"
  | "other";

export type Fault =
  /** 503 with x-ms-error-code ServerBusy, as Azure throttles an account. */
  | { type: "busy"; retryAfterSec?: number }
  /** 500 with x-ms-error-code OperationTimedOut. */
  | { type: "timeout"; retryAfterSec?: number }
  /** Any other error status and Azure error code. */
  | { type: "status"; status: number; code: string }
  /** A canned answer, for service behaviour Azurite lacks (e.g. a paginated page list). */
  | { type: "reply"; status: number; headers?: Record<string, string>; body: string }
  /** Destroy the client's connection without answering. */
  | { type: "reset" }
  /** Forward after `ms` milliseconds. */
  | { type: "delay"; ms: number }
  /**
   * Leave the request unread until `clear()` (then forward it, or time it out
   * if its `timeout` has passed, while its client is still there) or
   * `close()` (then cut it).
   */
  | { type: "hang" }
  /**
   * Take the whole request, body included, as the service would, then sit
   * on it: for `ms` if given, else until `release()` or `clear()`. Then it is
   * forwarded, or answered OperationTimedOut if its `timeout` has passed,
   * whether or not the client is still there; the client gets the answer if
   * it is. With `cut`, the client's connection is destroyed as soon as the
   * body is in: it sees a reset, yet the request goes on.
   */
  | { type: "hold"; ms?: number; cut?: boolean };

export interface FaultRule {
  fault: Fault;
  /** Only these kinds; all kinds when absent. */
  only?: RequestKind[];
  /** Extra predicate on the request. */
  match?: (req: ProxiedRequest) => boolean;
  /** Apply to this many matching requests, then pass through again. Unlimited when absent. */
  times?: number;
}

export interface ProxiedRequest {
  kind: RequestKind;
  method: string;
  url: URL;
  headers: IncomingMessage["headers"];
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT` */
  readonly origin: string;
  /** The target's blob endpoint, reached through the proxy. */
  readonly blobEndpoint: string;
  /** Rewrite a URL on the target (a blob URL with SAS, say) to go through the proxy. */
  via(url: string): string;
  /** Add a rule; rules are tried in the order added, the first that matches applies. */
  inject(rule: FaultRule): void;
  /** Remove every rule (pass through) and release held requests. */
  clear(): void;
  /** Requests received, of one kind or all. */
  received(kind?: RequestKind): number;
  /** Requests forwarded to the target. */
  forwarded(kind?: RequestKind): number;
  /**
   * Requests answered by a fault (OperationTimedOut for an expired `timeout`
   * included, and a SAS refused under `azurePolicies`).
   */
  faulted(kind?: RequestKind): number;
  /** Requests that carried no valid `timeout` query parameter. */
  untimed(kind?: RequestKind): number;
  /** Requests `hold` is sitting on now. */
  holding(): number;
  /**
   * Let every held request go (forwarded, or OperationTimedOut if its
   * `timeout` has passed); resolves once each has its answer from Azurite
   * or its timeout error.
   */
  release(): Promise<void>;
  /**
   * Seconds requests were open, summed: each from its arrival to the end of
   * its answer (or of its connection), added when it ends.
   */
  openSeconds(): number;
  /** Zero the counts and `openSeconds()`. */
  resetCounts(): void;
  /** Observe every request as it arrives; returns the unsubscribe function. */
  onRequest(listener: (req: ProxiedRequest) => void): () => void;
  /**
   * Resolve once `condition()` holds, checking after every request the proxy
   * sees; reject after `maxRequests` requests without it.
   */
  waitFor(condition: () => boolean, maxRequests?: number): Promise<void>;
  close(): Promise<void>;
  /**
   * With `azurePolicies`: whether a SAS bound to policy `id` of `container`
   * is honoured now, as far as the Set Container ACL requests the proxy saw
   * go. False for a policy it never saw.
   */
  policyInEffect(container: string, id: string): boolean;
  /**
   * With `azurePolicies`: resolves once the last change the proxy saw to
   * policy `id` of `container` has propagated (an added one is honoured, a
   * removed one is not); at once for a policy it never saw.
   */
  policySettled(container: string, id: string): Promise<void>;
}

export interface FaultProxyOptions {
  azurePolicies?: AzurePolicies;
}

/**
 * Azure's timing of stored access policies, which Azurite lacks. Azure
 * takes up to 30 s to apply a change of a container's policies, both ways:
 * a SAS bound to a new policy fails with 403 during that time, and one
 * bound to a removed policy goes on working. Azurite applies every change
 * at once. Also, Azure enforces a bound SAS's own `st` and `se`, where
 * Azurite takes the times of a bound SAS from its policy only.
 *
 * The emulation takes the worst case each way: a change takes the whole
 * `propagationMs`, no sooner. So the proxy watches the Set Container ACL
 * requests Azurite accepts and keeps, per container, when each policy was
 * added and removed (a policy set again unchanged keeps its time; one
 * changed counts as added anew).
 * A request whose SAS names a policy (`si`):
 * - outside the SAS's own `st`/`se`: 403 AuthenticationFailed;
 * - bound to a policy added less than `propagationMs` ago: 403
 *   AuthenticationFailed, never forwarded;
 * - bound to a policy removed less than `propagationMs` ago (that was in
 *   effect when removed): forwarded, re-signed with the account key as a
 *   SAS of its own with the removed policy's permissions and the same times,
 *   since Azurite no longer knows the policy. The proxy first checks the
 *   original signature with the same key, so only a SAS the account's key
 *   signed gets through;
 * - anything else: forwarded untouched, and Azurite decides (it refuses a
 *   policy it does not hold).
 * Time is the real time (`Date.now()`).
 *
 * Why re-sign rather than keep the removed policy in Azurite a while: the
 * proxy would have to rewrite the client's Set Container ACL (its Shared
 * Key signature covers the length of the body), answer for Azurite, keep
 * up to five policies where Azure counts only the client's, and remove
 * them later behind the client's back; Get Container ACL would show them.
 * Re-signing touches only the one request and leaves Azurite's policies as
 * the client set them.
 */
export interface AzurePolicies {
  /** How long a change of policies takes to apply: Azure says up to 30 s. */
  propagationMs: number;
  /** The account key, to check and re-sign SAS tokens; Azurite's well-known key if absent. */
  accountKey?: string;
}

type Outcome = "received" | "forwarded" | "faulted" | "untimed";

/** Start a proxy on 127.0.0.1 (port 0) in front of `targetEndpoint` (e.g. Azurite's blob endpoint). */
export async function startFaultProxy(
  targetEndpoint: string,
  options: FaultProxyOptions = {},
): Promise<FaultProxy> {
  const target = new URL(targetEndpoint);
  const policies = options.azurePolicies && new PolicyLedger(target, options.azurePolicies);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const rules: Array<FaultRule & { left: number }> = [];
  const counts = new Map<string, number>();
  let openMs = 0;
  const held = new Set<() => void>();
  /** Requests `hold` sits on, each letting go when called. */
  const holds = new Set<() => Promise<void>>();
  const timers = new Set<NodeJS.Timeout>();
  const events = new EventEmitter();

  const bump = (outcome: Outcome, kind: RequestKind) => {
    for (const key of [outcome, `${outcome}:${kind}`]) counts.set(key, (counts.get(key) ?? 0) + 1);
    events.emit("request");
  };
  const count = (outcome: Outcome, kind?: RequestKind) =>
    counts.get(kind ? `${outcome}:${kind}` : outcome) ?? 0;

  /**
   * Send `req` on to the target and its answer back to the client (if the
   * client is still there). `body`: the request body, already read (else it
   * is piped). `path`: sent instead of the request's own. `answered` learns
   * the target's status before the client does. Resolves once the target's
   * answer is in, or it failed.
   */
  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    kind: RequestKind,
    body?: Buffer,
    path = req.url,
    answered?: (status: number) => void,
  ): Promise<void> => {
    bump("forwarded", kind);
    return new Promise<void>((resolve) => {
      const upstream = httpRequest(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path,
          headers: { ...req.headers, host: target.host },
          agent,
        },
        (up) => {
          answered?.(up.statusCode ?? 502);
          up.once("end", resolve);
          up.once("error", () => resolve());
          if (res.destroyed || req.socket.destroyed) {
            up.resume();
            return;
          }
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      // The target failing mid-request looks, to the client, like the network failing.
      upstream.on("error", () => {
        req.socket.destroy();
        resolve();
      });
      if (body) upstream.end(body);
      else req.pipe(upstream);
    });
  };

  /**
   * Forward `req` (as Azure would treat it, under `azurePolicies`), unless
   * its server timeout passed since it `arrived`: then answer 500
   * OperationTimedOut, as Azure does, and never forward it.
   */
  const forwardInTime = (
    req: IncomingMessage,
    res: ServerResponse,
    info: ProxiedRequest,
    arrived: number,
    body?: Buffer,
  ): Promise<void> => {
    const timeoutSec = serverTimeoutSec(info.url);
    if (timeoutSec === undefined || performance.now() - arrived <= timeoutSec * 1000) {
      return policies ? forwardAsAzure(policies, req, res, info, body) : forward(req, res, info.kind, body);
    }
    return refuse(req, res, info, body, 500, "OperationTimedOut", TIMED_OUT_MESSAGE);
  };

  /** Answer `req` with an error once its body is in, as the service does; never forward it. */
  const refuse = (
    req: IncomingMessage,
    res: ServerResponse,
    info: ProxiedRequest,
    body: Buffer | undefined,
    status: number,
    code: string,
    message: string,
  ): Promise<void> => {
    bump("faulted", info.kind);
    const answer = () => {
      if (!res.destroyed && !req.socket.destroyed) answerError(res, status, code, message);
    };
    if (body || req.readableEnded) answer();
    else {
      req.resume();
      req.once("end", answer);
    }
    return Promise.resolve();
  };

  /**
   * Forward `req` as Azure would treat it under `AzurePolicies`: a SAS
   * bound to a policy judged by the policy's history, a Set Container ACL
   * (or a container's deletion) recorded once the target accepts it.
   */
  const forwardAsAzure = async (
    ledger: PolicyLedger,
    req: IncomingMessage,
    res: ServerResponse,
    info: ProxiedRequest,
    body?: Buffer,
  ): Promise<void> => {
    const verdict = ledger.judge(info.url, Date.now());
    if (verdict.refuse) {
      const message = `${AUTH_FAILED_MESSAGE}\n${verdict.refuse}`;
      return refuse(req, res, info, body, 403, "AuthenticationFailed", message);
    }
    const container = ledger.containerOf(info.url);
    const restype = info.url.searchParams.get("restype");
    const comp = info.url.searchParams.get("comp");
    if (container !== undefined && restype === "container" && comp === "acl" && info.method === "PUT") {
      const acl = body ?? (await readBody(req));
      return forward(req, res, info.kind, acl, verdict.path, (status) => {
        if (status === 200) ledger.set(container, parseSignedIdentifiers(acl.toString("utf8")), Date.now());
      });
    }
    if (container !== undefined && restype === "container" && comp === null && info.method === "DELETE") {
      return forward(req, res, info.kind, body, verdict.path, (status) => {
        if (status === 202) ledger.forget(container);
      });
    }
    return forward(req, res, info.kind, body, verdict.path);
  };

  const server: Server = createServer((req, res) => {
    const arrived = performance.now();
    res.once("close", () => {
      openMs += performance.now() - arrived;
    });
    const url = new URL(req.url ?? "/", "http://proxy");
    const info: ProxiedRequest = {
      kind: kindOf(req.method ?? "GET", url, req.headers),
      method: req.method ?? "GET",
      url,
      headers: req.headers,
    };
    const rule = rules.find(
      (r) => (!r.only || r.only.includes(info.kind)) && (!r.match || r.match(info)),
    );
    if (rule && --rule.left <= 0) rules.splice(rules.indexOf(rule), 1);
    bump("received", info.kind);
    if (serverTimeoutSec(url) === undefined) bump("untimed", info.kind);
    events.emit("info", info);
    const fault = rule?.fault;
    if (!fault) {
      void forwardInTime(req, res, info, arrived);
      return;
    }
    switch (fault.type) {
      case "delay": {
        const timer = setTimeout(() => {
          timers.delete(timer);
          void forwardInTime(req, res, info, arrived);
        }, fault.ms);
        timers.add(timer);
        return;
      }
      case "hang": {
        const release = () => void forwardInTime(req, res, info, arrived);
        held.add(release);
        req.socket.once("close", () => held.delete(release));
        return;
      }
      case "hold": {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.once("end", () => {
          const body = Buffer.concat(chunks);
          let gone = false;
          const release = () => {
            if (gone) return Promise.resolve();
            gone = true;
            holds.delete(release);
            return forwardInTime(req, res, info, arrived, body);
          };
          holds.add(release);
          events.emit("request");
          if (fault.cut) req.socket.destroy();
          if (fault.ms !== undefined) {
            const timer = setTimeout(() => {
              timers.delete(timer);
              void release();
            }, fault.ms);
            timers.add(timer);
          }
        });
        return;
      }
      case "reply":
        bump("faulted", info.kind);
        req.resume();
        req.once("end", () => {
          res.writeHead(fault.status, {
            "content-length": Buffer.byteLength(fault.body),
            ...fault.headers,
          });
          res.end(fault.body);
        });
        return;
      case "reset":
        bump("faulted", info.kind);
        req.socket.destroy();
        return;
      default: {
        bump("faulted", info.kind);
        const [status, code, message] =
          fault.type === "busy"
            ? [
                503,
                "ServerBusy",
                "The server is currently unable to receive requests. Please retry your request.",
              ]
            : fault.type === "timeout"
              ? [500, "OperationTimedOut", TIMED_OUT_MESSAGE]
              : [fault.status, fault.code, `Injected ${fault.code}.`];
        const retryAfter = fault.type === "status" ? undefined : fault.retryAfterSec;
        // Read the whole request first, as the service does, so the connection stays usable.
        req.resume();
        req.once("end", () => answerError(res, status, code, message, retryAfter));
      }
    }
  });
  const sockets = new Set<import("node:net").Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("fault proxy has no port");
  const origin = `http://127.0.0.1:${addr.port}`;

  return {
    origin,
    blobEndpoint: `${origin}${target.pathname.replace(/\/+$/, "")}`,
    via(url: string) {
      const u = new URL(url);
      return `${origin}${u.pathname}${u.search}`;
    },
    inject(rule) {
      rules.push({ ...rule, left: rule.times ?? Number.POSITIVE_INFINITY });
    },
    clear() {
      rules.length = 0;
      const releases = [...held];
      held.clear();
      for (const release of releases) release();
      for (const release of [...holds]) void release();
    },
    received: (kind) => count("received", kind),
    forwarded: (kind) => count("forwarded", kind),
    faulted: (kind) => count("faulted", kind),
    untimed: (kind) => count("untimed", kind),
    holding: () => holds.size,
    async release() {
      await Promise.all([...holds].map((release) => release()));
    },
    openSeconds: () => openMs / 1000,
    resetCounts() {
      counts.clear();
      openMs = 0;
    },
    onRequest(listener) {
      events.on("info", listener);
      return () => events.off("info", listener);
    },
    waitFor(condition, maxRequests = 10_000) {
      if (condition()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
          if (condition()) {
            events.off("request", check);
            resolve();
          } else if (++seen >= maxRequests) {
            events.off("request", check);
            reject(new Error(`condition not met after ${maxRequests} requests`));
          }
        };
        events.on("request", check);
      });
    },
    policyInEffect(container, id) {
      return policies?.inEffect(container, id, Date.now()) ?? false;
    },
    async policySettled(container, id) {
      if (!policies) throw new Error("policySettled needs the azurePolicies option");
      // Wait until the change has had its time; a later change in between restarts the wait.
      for (let at = policies.settlesAt(container, id); at > Date.now(); at = policies.settlesAt(container, id)) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            timers.delete(timer);
            resolve();
          }, at - Date.now());
          timers.add(timer);
        });
      }
    },
    async close() {
      rules.length = 0;
      held.clear();
      holds.clear();
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, "close");
      agent.destroy();
    },
  };
}

const TIMED_OUT_MESSAGE = "The operation could not be completed within the permitted time.";

/** The request's server timeout in seconds, or undefined when it carries none (or not a number). */
function serverTimeoutSec(url: URL): number | undefined {
  const value = url.searchParams.get("timeout");
  return value !== null && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** Classify a Blob service request by method, `comp` and page-write mode. */
function kindOf(method: string, url: URL, headers: IncomingMessage["headers"]): RequestKind {
  const comp = url.searchParams.get("comp");
  if (url.searchParams.get("restype")) return "other";
  switch (method) {
    case "PUT":
      if (comp === "page") return headers["x-ms-page-write"] === "clear" ? "clearPages" : "putPage";
      if (comp === "lease") return "lease";
      if (comp === "properties") return "setProperties";
      if (comp === null && headers["x-ms-blob-type"]) return "putBlob";
      return "other";
    case "GET":
      if (comp === "pagelist") return "pageRanges";
      return comp === null ? "getBlob" : "other";
    case "HEAD":
      return comp === null ? "properties" : "other";
    case "DELETE":
      return "delete";
    default:
      return "other";
  }
}

function answerError(
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  retryAfterSec?: number,
) {
  const requestId = randomUUID();
  const body =
    `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code>` +
    `<Message>${message}\nRequestId:${requestId}\nTime:${new Date().toISOString()}</Message></Error>`;
  const headers: Record<string, string | number> = {
    "content-type": "application/xml",
    "content-length": Buffer.byteLength(body),
    "x-ms-error-code": code,
    "x-ms-request-id": requestId,
  };
  if (retryAfterSec !== undefined) headers["retry-after"] = retryAfterSec;
  res.writeHead(status, headers);
  res.end(body);
}

const AUTH_FAILED_MESSAGE =
  "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.";

/** The whole body of `req`. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.once("end", () => resolve(Buffer.concat(chunks)));
    req.once("error", reject);
  });
}

/** What a stored access policy grants: the fields of a SignedIdentifier's AccessPolicy. */
interface StoredPolicy {
  permissions?: string;
  start?: string;
  expiry?: string;
}

/** A policy as the proxy saw it set: when it was added, and removed if it was. */
interface PolicyHistory extends StoredPolicy {
  addedAt: number;
  removedAt?: number;
}

/** The policies of a Set Container ACL body (SignedIdentifiers XML), by id. */
function parseSignedIdentifiers(xml: string): Map<string, StoredPolicy> {
  const unescape = (text: string) =>
    text
      .replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">")
      .replace(/&quot;/g, '"')
      .replace(/&apos;/g, "'")
      .replace(/&amp;/g, "&");
  const policies = new Map<string, StoredPolicy>();
  for (const [, entry] of xml.matchAll(/<SignedIdentifier>([\s\S]*?)<\/SignedIdentifier>/g)) {
    const field = (name: string) => {
      const found = new RegExp(`<${name}>([^<]*)</${name}>`).exec(entry!)?.[1];
      return found === undefined || found === "" ? undefined : unescape(found);
    };
    const id = field("Id");
    if (id === undefined) continue;
    const policy: StoredPolicy = {};
    const permissions = field("Permission");
    const start = field("Start");
    const expiry = field("Expiry");
    if (permissions !== undefined) policy.permissions = permissions;
    if (start !== undefined) policy.start = start;
    if (expiry !== undefined) policy.expiry = expiry;
    policies.set(id, policy);
  }
  return policies;
}

/** Every query parameter a SAS may carry: what a re-signed request drops before adding its own. */
const SAS_PARAMETERS = [
  "sv", "ss", "srt", "spr", "st", "se", "sip", "si", "ses", "skoid", "sktid", "skt", "ske",
  "sks", "skv", "skdutid", "sr", "sp", "rscc", "rscd", "rsce", "rscl", "rsct", "saoid", "scid",
  "sduoid", "srh", "srq", "sdd", "sig",
];

/** What becomes of a request under `AzurePolicies`: refused (why), or forwarded (to `path` if re-signed). */
type Verdict = { refuse: string; path?: undefined } | { refuse?: undefined; path?: string };

/**
 * Per container, the history of its stored access policies as Azure would
 * apply them (`AzurePolicies`), and what that makes of a SAS bound to one.
 */
class PolicyLedger {
  readonly #byContainer = new Map<string, Map<string, PolicyHistory>>();
  readonly #propagationMs: number;
  /** The target's path before the container (`/devstoreaccount1` on Azurite), without trailing slash. */
  readonly #prefix: string;
  readonly #key: StorageSharedKeyCredential;

  constructor(target: URL, options: AzurePolicies) {
    this.#propagationMs = options.propagationMs;
    this.#prefix = target.pathname.replace(/\/+$/, "");
    // Azurite is addressed by path (`/<account>/<container>`); Azure by host (`<account>.blob…`).
    const account = this.#prefix.split("/").find(Boolean) ?? target.hostname.split(".")[0]!;
    this.#key = new StorageSharedKeyCredential(account, options.accountKey ?? DEV_ACCOUNT_KEY);
  }

  /** The container a request is for, or undefined for a request on the account. */
  containerOf(url: URL): string | undefined {
    return this.#resource(url)?.container;
  }

  /** Record that the container's policies became exactly `policies` at `at`. */
  set(container: string, policies: Map<string, StoredPolicy>, at: number): void {
    const histories = this.#byContainer.get(container) ?? new Map<string, PolicyHistory>();
    this.#byContainer.set(container, histories);
    for (const [id, history] of histories) {
      if (!policies.has(id) && history.removedAt === undefined) history.removedAt = at;
    }
    for (const [id, policy] of policies) {
      const before = histories.get(id);
      const unchanged =
        before !== undefined &&
        before.removedAt === undefined &&
        before.permissions === policy.permissions &&
        before.start === policy.start &&
        before.expiry === policy.expiry;
      if (!unchanged) histories.set(id, { ...policy, addedAt: at });
    }
  }

  /** The container is gone, and its policies with it. */
  forget(container: string): void {
    this.#byContainer.delete(container);
  }

  /** Whether Azure would honour a SAS bound to policy `id` of `container` at `now`. */
  inEffect(container: string, id: string, now: number): boolean {
    const history = this.#byContainer.get(container)?.get(id);
    return history !== undefined && this.#honoured(history, now);
  }

  /** When the last change to policy `id` of `container` has propagated (0 for one never seen). */
  settlesAt(container: string, id: string): number {
    const history = this.#byContainer.get(container)?.get(id);
    if (!history) return 0;
    return (history.removedAt ?? history.addedAt) + this.#propagationMs;
  }

  /** What Azure would make of `url` at `now`, as far as a SAS bound to a policy goes. */
  judge(url: URL, now: number): Verdict {
    const query = url.searchParams;
    const id = query.get("si");
    // A user delegation SAS cannot name a policy: Azurite refuses that itself.
    if (id === null || query.has("skoid")) return {};
    const startsAt = query.has("st") ? Date.parse(query.get("st")!) : -Infinity;
    const expiresAt = query.has("se") ? Date.parse(query.get("se")!) : Infinity;
    if (now < startsAt || now > expiresAt) return { refuse: "Signed time window does not include the current time." };
    const resource = this.#resource(url);
    const history = resource && this.#byContainer.get(resource.container)?.get(id);
    // Never seen set through here: Azurite's word is all there is.
    if (!resource || !history) return {};
    const removed = history.removedAt !== undefined;
    if (!this.#honoured(history, now)) {
      // A policy removed long enough ago is refused by Azurite already, as by Azure.
      return removed && now - history.removedAt! >= this.#propagationMs
        ? {}
        : { refuse: `Stored access policy ${id} is not in effect yet.` };
    }
    if (!removed) return {};
    // Azure still honours the removed policy; Azurite no longer knows it. Let the request through
    // as a SAS of its own with the policy's permissions, once the SAS it carries proves genuine.
    const values = this.#signedValues(url, resource);
    let signed: string | undefined;
    try {
      signed = generateBlobSASQueryParameters(values, this.#key).signature;
    } catch {
      signed = undefined;
    }
    if (signed === undefined || signed !== query.get("sig")) {
      return { refuse: "Signature did not match." };
    }
    const grant = query.get("sp") ?? history.permissions;
    const startsOn = values.startsOn ?? (history.start ? new Date(history.start) : undefined);
    const expiresOn = values.expiresOn ?? (history.expiry ? new Date(history.expiry) : undefined);
    if (grant === undefined || expiresOn === undefined) return { refuse: "The policy grants nothing." };
    if (now < (startsOn?.getTime() ?? -Infinity) || now > expiresOn.getTime()) {
      return { refuse: "Signed time window does not include the current time." };
    }
    const own = generateBlobSASQueryParameters(
      {
        ...values,
        identifier: undefined,
        permissions: permissionsOf(grant, resource.blob),
        ...(startsOn ? { startsOn } : {}),
        expiresOn,
      },
      this.#key,
    );
    const resigned = new URL(url);
    for (const name of SAS_PARAMETERS) resigned.searchParams.delete(name);
    const rest = resigned.searchParams.toString();
    return { path: `${resigned.pathname}?${rest ? `${rest}&` : ""}${own.toString()}` };
  }

  #honoured(history: PolicyHistory, now: number): boolean {
    const p = this.#propagationMs;
    if (history.removedAt === undefined) return now - history.addedAt >= p;
    // Removed: still honoured for a while, if it was in effect by then.
    return history.removedAt - history.addedAt >= p && now - history.removedAt < p;
  }

  /** The container and blob (decoded; "" for the container itself) a request is for. */
  #resource(url: URL): { container: string; blob: string } | undefined {
    if (!url.pathname.startsWith(`${this.#prefix}/`)) return undefined;
    const [container, ...blob] = url.pathname.slice(this.#prefix.length + 1).split("/");
    if (!container) return undefined;
    return { container: decodeURIComponent(container), blob: decodeURIComponent(blob.join("/")) };
  }

  /** The signature values of the service SAS on `url`, as its signer gave them. */
  #signedValues(url: URL, resource: { container: string; blob: string }): BlobSASSignatureValues {
    const q = url.searchParams;
    const value = (name: string) => q.get(name) ?? undefined;
    const values: BlobSASSignatureValues = { containerName: resource.container };
    const set = <K extends keyof BlobSASSignatureValues>(key: K, v: BlobSASSignatureValues[K] | undefined) => {
      if (v !== undefined) values[key] = v;
    };
    if (q.get("sr") !== "c") set("blobName", resource.blob);
    if (q.get("sr") === "bs") set("snapshotTime", value("snapshot"));
    set("version", value("sv"));
    set("protocol", value("spr") as SASProtocol | undefined);
    set("startsOn", q.has("st") ? new Date(q.get("st")!) : undefined);
    set("expiresOn", q.has("se") ? new Date(q.get("se")!) : undefined);
    const ip = value("sip")?.split("-");
    set("ipRange", ip ? { start: ip[0]!, ...(ip[1] ? { end: ip[1] } : {}) } : undefined);
    set("identifier", value("si"));
    set("permissions", q.has("sp") ? permissionsOf(q.get("sp")!, resource.blob) : undefined);
    set("encryptionScope", value("ses"));
    set("cacheControl", value("rscc"));
    set("contentDisposition", value("rscd"));
    set("contentEncoding", value("rsce"));
    set("contentLanguage", value("rscl"));
    set("contentType", value("rsct"));
    return values;
  }
}

/** `sp` as the SDK takes it: blob permissions for a blob, container permissions for a container. */
function permissionsOf(sp: string, blob: string): BlobSASPermissions | ContainerSASPermissions {
  return blob ? BlobSASPermissions.parse(sp) : ContainerSASPermissions.parse(sp);
}
