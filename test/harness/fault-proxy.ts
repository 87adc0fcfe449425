/**
 * An in-process HTTP reverse proxy in front of Azurite whose behaviour a test
 * switches at will: pass through, answer like a throttled or overloaded Azure
 * (503 ServerBusy, 500 OperationTimedOut, with Azure's XML error body), cut
 * connections, delay or hold requests. It counts requests by kind, so tests
 * can assert how many Put Page calls reached the service, and the seconds
 * requests were open.
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
  /** Hold the request until `clear()` (then forward it) or `close()` (then cut it). */
  | { type: "hang" };

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
  /** Requests answered by a fault. */
  faulted(kind?: RequestKind): number;
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

type Outcome = "received" | "forwarded" | "faulted";

/** Start a proxy on 127.0.0.1 (port 0) in front of `targetEndpoint` (e.g. Azurite's blob endpoint). */
export async function startFaultProxy(targetEndpoint: string): Promise<FaultProxy> {
  const target = new URL(targetEndpoint);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const rules: Array<FaultRule & { left: number }> = [];
  const counts = new Map<string, number>();
  let openMs = 0;
  const held = new Set<() => void>();
  const timers = new Set<NodeJS.Timeout>();
  const events = new EventEmitter();

  const bump = (outcome: Outcome, kind: RequestKind) => {
    for (const key of [outcome, `${outcome}:${kind}`]) counts.set(key, (counts.get(key) ?? 0) + 1);
    events.emit("request");
  };
  const count = (outcome: Outcome, kind?: RequestKind) =>
    counts.get(kind ? `${outcome}:${kind}` : outcome) ?? 0;

  const forward = (req: IncomingMessage, res: ServerResponse, kind: RequestKind) => {
    bump("forwarded", kind);
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
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    // The target failing mid-request looks, to the client, like the network failing.
    upstream.on("error", () => req.socket.destroy());
    req.pipe(upstream);
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
    events.emit("info", info);
    const fault = rule?.fault;
    if (!fault) return forward(req, res, info.kind);
    switch (fault.type) {
      case "delay": {
        const timer = setTimeout(() => {
          timers.delete(timer);
          forward(req, res, info.kind);
        }, fault.ms);
        timers.add(timer);
        return;
      }
      case "hang": {
        const release = () => forward(req, res, info.kind);
        held.add(release);
        req.socket.once("close", () => held.delete(release));
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
              ? [
                  500,
                  "OperationTimedOut",
                  "The operation could not be completed within the permitted time.",
                ]
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
    },
    received: (kind) => count("received", kind),
    forwarded: (kind) => count("forwarded", kind),
    faulted: (kind) => count("faulted", kind),
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
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, "close");
      agent.destroy();
    },
  };
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
