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
  /** Requests answered by a fault (OperationTimedOut for an expired `timeout` included). */
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
}

type Outcome = "received" | "forwarded" | "faulted" | "untimed";

/** Start a proxy on 127.0.0.1 (port 0) in front of `targetEndpoint` (e.g. Azurite's blob endpoint). */
export async function startFaultProxy(targetEndpoint: string): Promise<FaultProxy> {
  const target = new URL(targetEndpoint);
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
   * is piped). Resolves once the target's answer is in, or it failed.
   */
  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    kind: RequestKind,
    body?: Buffer,
  ): Promise<void> => {
    bump("forwarded", kind);
    return new Promise<void>((resolve) => {
      const upstream = httpRequest(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: target.host },
          agent,
        },
        (up) => {
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
   * Forward `req`, unless its server timeout passed since it `arrived`: then
   * answer 500 OperationTimedOut, as Azure does, and never forward it.
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
      return forward(req, res, info.kind, body);
    }
    bump("faulted", info.kind);
    const answer = () => {
      if (!res.destroyed && !req.socket.destroyed) {
        answerError(res, 500, "OperationTimedOut", TIMED_OUT_MESSAGE);
      }
    };
    if (body || req.readableEnded) answer();
    else {
      req.resume();
      req.once("end", answer);
    }
    return Promise.resolve();
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
