/**
 * The agent's local status API, a Hono app over a `StatusSource`:
 *
 *   GET /healthz   200 while the agent runs; problems listed in the body
 *   GET /volumes   the volumes served, with their I/O totals
 *   GET /metrics   Prometheus text format (metrics.ts)
 *
 * Read-only and unauthenticated, so it listens on a 0600 unix socket or on
 * loopback only (listen.ts). Other methods on these paths answer 405, other
 * paths 404, both as `{ "error": { "code", "message" } }`; requests node
 * refuses before they reach the app (headers too large, malformed HTTP)
 * are answered in that shape by the listener (node-edge.ts).
 */
import { type Context, Hono } from "hono";
import { latencyPercentiles } from "../engine/latency.ts";
import { type IoTotals, ioTotals } from "../engine/stats-window.ts";
import { healthReport } from "./health.ts";
import { statusMetrics } from "./metrics.ts";
import type { ReplicaStatus, ServedVolume, StatusSource } from "./source.ts";

/** Stable codes of the errors this API answers with. */
export type StatusErrorCode = "NotFound" | "MethodNotAllowed" | "Internal";

const PATHS = ["/healthz", "/volumes", "/metrics"] as const;

export interface StatusAppOptions {
  /** Where unexpected errors go (the agent's logger); the client only sees "internal error". */
  report?: (err: unknown) => void;
}

/** The status API over `source`, with its own metrics registry. */
export function statusApp(source: StatusSource, opts: StatusAppOptions = {}): Hono {
  const metrics = statusMetrics(source);
  const app = new Hono();
  app.get("/healthz", (c) => c.json(healthReport(source)));
  app.get("/volumes", (c) => c.json({ items: source.volumes().map(describeVolume) }));
  app.get("/metrics", async (c) => {
    const text = await metrics.scrape();
    return c.body(text, 200, { "Content-Type": metrics.contentType });
  });
  // After the GET routes, so these only see other methods (Hono answers HEAD with GET).
  for (const path of PATHS) {
    app.all(path, (c) => {
      c.header("Allow", "GET, HEAD");
      const message = `${c.req.method} is not allowed on ${path}; use GET`;
      return errorBody(c, 405, "MethodNotAllowed", message);
    });
  }
  app.notFound((c) => {
    const message = `no route for ${c.req.method} ${c.req.path} (try ${PATHS.join(", ")})`;
    return errorBody(c, 404, "NotFound", message);
  });
  app.onError((err, c) => {
    opts.report?.(err);
    return errorBody(c, 500, "Internal", "internal error");
  });
  return app;
}

function errorBody(
  c: Context,
  status: 404 | 405 | 500,
  code: StatusErrorCode,
  message: string,
): Response {
  return c.json({ error: { code, message } }, status);
}

/** One entry of GET /volumes. */
export interface VolumeEntry {
  name: string;
  epoch: number;
  state: ServedVolume["state"];
  sizeBytes: number;
  socket: string;
  device: string | null;
  /** Cumulative since the volume was opened on this node. */
  io: IoTotals;
  /** Percentiles over every request since open, in milliseconds. */
  latencyMs: { read: { p50: number; p99: number }; write: { p50: number; p99: number } };
  /** Each replica as the writer uses it, with copy progress; [] outside a cluster. */
  replicas: ReplicaStatus[];
}

function describeVolume(v: ServedVolume): VolumeEntry {
  const m = v.metrics();
  return {
    name: v.name,
    epoch: v.epoch,
    state: v.state,
    sizeBytes: v.sizeBytes,
    socket: v.socket,
    device: v.device,
    io: ioTotals(m),
    latencyMs: {
      read: latencyPercentiles(m.latency.read.counts),
      write: latencyPercentiles(m.latency.write.counts),
    },
    replicas: v.replicas?.() ?? [],
  };
}
