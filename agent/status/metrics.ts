/**
 * GET /metrics: per-volume counters, gauges and latency histograms, and the
 * process metrics, in the Prometheus text format, through prom-client.
 *
 * Each app has its own Registry (never the global one), so two apps in one
 * process (tests, or a future second listener) do not share or clash. Every
 * per-volume family carries a `volume` label; request families also `op`.
 * The per-volume values are read once per scrape from `source`, so all
 * families of one scrape show the same moment.
 *
 * Process metrics keep their standard names (process_cpu_seconds_total,
 * nodejs_heap_size_used_bytes...): every Prometheus client library exposes
 * them under those names, and generic dashboards and alerts look for them.
 */
import { collectDefaultMetrics, Counter, Gauge, type Metric, Registry } from "prom-client";
import {
  LATENCY_BOUNDS_US,
  LATENCY_KINDS,
  type LatencyKind,
  type LatencySnapshot,
} from "../engine/latency.ts";
import type { IoCounts } from "../engine/meter.ts";
import type { VolumeMetrics } from "../engine/volume.ts";
import type {
  ReplicaStatus,
  ReplicaUse,
  ServedVolume,
  ServingState,
  StatusSource,
} from "./source.ts";

/** One volume as one scrape sees it. */
interface Observed {
  volume: ServedVolume;
  metrics: VolumeMetrics;
  replicas: ReplicaStatus[];
}

type Labels = Record<string, string>;
type Sample = readonly [labels: Labels, value: number];

interface Family {
  name: string;
  help: string;
  /** Labels besides `volume`. */
  labelNames?: string[];
  samples(o: Observed): Sample[];
}

/** NBD requests by the `op` label value. */
const REQUEST_OPS: ReadonlyArray<readonly [string, keyof IoCounts]> = [
  ["read", "reads"],
  ["write", "writes"],
  ["flush", "flushes"],
  ["trim", "trims"],
  ["zero", "zeroes"],
  ["block_status", "blockStatus"],
  ["cache", "caches"],
];

const BYTE_OPS: ReadonlyArray<readonly [string, keyof IoCounts]> = [
  ["read", "bytesRead"],
  ["write", "bytesWritten"],
  ["trim", "bytesTrimmed"],
  ["zero", "bytesZeroed"],
];

const STATES: readonly ServingState[] = ["SERVING", "DEGRADED", "FAILED", "STOPPED"];
const REPLICA_USES: readonly ReplicaUse[] = ["ONLINE", "OFFLINE", "RESYNCING", "REBUILDING"];
const COPYING: ReadonlySet<ReplicaUse> = new Set(["RESYNCING", "REBUILDING"]);
const REPLICA_LABELS = ["replica", "pool"];

/** One sample per replica (`pick` undefined: none for that replica). */
const perReplica =
  (pick: (r: ReplicaStatus) => number | undefined) =>
  (o: Observed): Sample[] =>
    o.replicas.flatMap((r) => {
      const value = pick(r);
      return value === undefined ? [] : [[{ replica: r.id, pool: r.pool }, value] as const];
    });

const byOp = (counts: IoCounts, ops: typeof REQUEST_OPS): Sample[] =>
  ops.map(([op, key]) => [{ op }, counts[key]] as const);
const one = (value: number): Sample[] => [[{}, value]];

const COUNTERS: Family[] = [
  {
    name: "pagedisk_requests_total",
    help: "Requests made by the volume's clients, by kind.",
    labelNames: ["op"],
    samples: (o) => byOp(o.metrics.client, REQUEST_OPS),
  },
  {
    name: "pagedisk_request_bytes_total",
    help: "Bytes read, written, trimmed and zeroed by the volume's clients.",
    labelNames: ["op"],
    samples: (o) => byOp(o.metrics.client, BYTE_OPS),
  },
  {
    name: "pagedisk_backend_requests_total",
    help: "Requests that reached the storage, by kind (after alignment, holes and merging).",
    labelNames: ["op"],
    samples: (o) => byOp(o.metrics.backend, REQUEST_OPS),
  },
  {
    name: "pagedisk_backend_bytes_total",
    help: "Bytes that reached the storage, by kind.",
    labelNames: ["op"],
    samples: (o) => byOp(o.metrics.backend, BYTE_OPS),
  },
  {
    name: "pagedisk_request_errors_total",
    help: "Client requests answered with an error.",
    samples: (o) => one(o.metrics.errors),
  },
  {
    name: "pagedisk_throttle_pauses_total",
    help: "Times the volume paused I/O because the storage service throttled it.",
    samples: (o) => one(o.metrics.throttle.pauses),
  },
  {
    name: "pagedisk_throttle_paused_seconds_total",
    help: "Time the volume spent paused by throttling.",
    samples: (o) => one(o.metrics.throttle.pausedMs / 1000),
  },
  {
    name: "pagedisk_storage_retries_total",
    help: "Storage requests retried after throttling or a transient failure.",
    samples: (o) => one(o.metrics.throttle.retries),
  },
  {
    name: "pagedisk_coalesce_merged_writes_total",
    help: "Writes that went to the storage merged with adjacent ones.",
    samples: (o) => one(o.metrics.coalesce.mergedWrites),
  },
  {
    name: "pagedisk_coalesce_backend_writes_total",
    help: "Writes issued to the storage by the write scheduler (merged or not).",
    samples: (o) => one(o.metrics.coalesce.writeBatches),
  },
  {
    name: "pagedisk_read_modify_writes_total",
    help: "Unaligned writes completed by reading the rest of their sectors.",
    samples: (o) => one(o.metrics.readModifyWrites),
  },
];

const GAUGES: Family[] = [
  {
    name: "pagedisk_queue_depth",
    help: "Client requests in flight.",
    samples: (o) => one(o.metrics.queueDepth),
  },
  {
    name: "pagedisk_coalesce_pending",
    help: "Mutations queued or in flight at the write scheduler.",
    samples: (o) => one(o.metrics.coalesce.pending),
  },
  {
    name: "pagedisk_volume_size_bytes",
    help: "Size of the volume.",
    samples: (o) => one(o.volume.sizeBytes),
  },
  {
    name: "pagedisk_volume_epoch",
    help: "Epoch of the attachment this node serves.",
    samples: (o) => one(o.volume.epoch),
  },
  {
    name: "pagedisk_volume_state",
    help: "1 for the state the volume is in, 0 for the others.",
    labelNames: ["state"],
    samples: (o) => STATES.map((state) => [{ state }, o.volume.state === state ? 1 : 0] as const),
  },
  {
    name: "pagedisk_replica_online",
    help: "1 when the replica is a full member (written and readable), 0 when offline or catching up.",
    labelNames: REPLICA_LABELS,
    samples: perReplica((r) => (r.state === "ONLINE" ? 1 : 0)),
  },
  {
    name: "pagedisk_replica_state",
    help: "1 for the state the writer has the replica in, 0 for the others.",
    labelNames: [...REPLICA_LABELS, "state"],
    samples: (o) =>
      o.replicas.flatMap((r) =>
        REPLICA_USES.map(
          (state) => [{ replica: r.id, pool: r.pool, state }, r.state === state ? 1 : 0] as const,
        ),
      ),
  },
  {
    name: "pagedisk_replica_copy_progress",
    help: "Fraction done (0 to 1) of the resync or rebuild of a replica being copied to.",
    labelNames: REPLICA_LABELS,
    samples: perReplica((r) => (COPYING.has(r.state) ? (r.progress ?? 0) / 100 : undefined)),
  },
  {
    name: "pagedisk_replica_copied_bytes",
    help: "Bytes the current resync or rebuild of the replica has copied.",
    labelNames: REPLICA_LABELS,
    samples: perReplica((r) => (COPYING.has(r.state) ? (r.copiedBytes ?? 0) : undefined)),
  },
  {
    name: "pagedisk_replica_copy_total_bytes",
    help: "Bytes the current resync or rebuild of the replica has to copy in all.",
    labelNames: REPLICA_LABELS,
    samples: perReplica((r) => (COPYING.has(r.state) ? r.totalBytes : undefined)),
  },
  {
    name: "pagedisk_replica_dirty_bytes",
    help: "Bytes written while the replica was offline, tracked for its resync.",
    labelNames: REPLICA_LABELS,
    samples: perReplica((r) => r.dirtyBytes ?? 0),
  },
];

const DURATION = "pagedisk_request_duration_seconds";

/** prom-client's text format for `source`. */
export interface StatusMetrics {
  registry: Registry;
  contentType: string;
  /** The whole exposition, every volume read once. */
  scrape(): Promise<string>;
}

/** A registry with every per-volume family and the process metrics. */
export function statusMetrics(source: StatusSource): StatusMetrics {
  const registry = new Registry();
  let current: Observed[] | undefined;
  const observe = (): Observed[] =>
    current ??
    source.volumes().map((volume) => ({
      volume,
      metrics: volume.metrics(),
      replicas: volume.replicas?.() ?? [],
    }));

  for (const family of COUNTERS) {
    new Counter({
      name: family.name,
      help: family.help,
      labelNames: ["volume", ...(family.labelNames ?? [])],
      registers: [registry],
      // Values are totals kept by the engine: set them, rather than count twice.
      collect() {
        this.reset();
        for (const o of observe()) {
          for (const [labels, value] of family.samples(o)) {
            this.inc({ ...labels, volume: o.volume.name }, value);
          }
        }
      },
    });
  }
  for (const family of GAUGES) {
    new Gauge({
      name: family.name,
      help: family.help,
      labelNames: ["volume", ...(family.labelNames ?? [])],
      registers: [registry],
      collect() {
        this.reset();
        for (const o of observe()) {
          for (const [labels, value] of family.samples(o)) {
            this.set({ ...labels, volume: o.volume.name }, value);
          }
        }
      },
    });
  }
  new Gauge({
    name: "pagedisk_control_plane_connected",
    help: "1 when the last heartbeat landed in the control plane's liveness table.",
    registers: [registry],
    collect() {
      this.set(source.node().connected ? 1 : 0);
    },
  });
  registry.registerMetric(
    aggregatedHistogram(DURATION, "Client request latency, by kind.", () =>
      observe().flatMap((o) =>
        LATENCY_KINDS.map((op: LatencyKind) => ({
          labels: { volume: o.volume.name, op },
          snapshot: o.metrics.latency[op],
        })),
      ),
    ),
  );
  collectDefaultMetrics({ register: registry });

  return {
    registry,
    contentType: registry.contentType,
    async scrape() {
      current = observe();
      try {
        return await registry.metrics();
      } finally {
        current = undefined;
      }
    },
  };
}

interface HistogramSample {
  labels: Labels;
  snapshot: LatencySnapshot;
}

/** Bucket bounds as `le` label values, in seconds. */
const LE = LATENCY_BOUNDS_US.map((us) => String(us / 1e6));

/**
 * A histogram whose observations are counted elsewhere (the volume's
 * meter, latency.ts), as a metric object for `registerMetric`: prom-client's
 * Registry calls `get()` and formats the values it returns (`_bucket` with
 * cumulative counts per `le`, `_sum`, `_count`), exactly as it does for its
 * own Histogram, which could only be fed by observing every request again.
 * prom-client's types admit only its own classes, hence the cast.
 */
function aggregatedHistogram(
  name: string,
  help: string,
  samples: () => HistogramSample[],
): Metric {
  const get = async () => {
    const values: Array<{ metricName: string; labels: Labels; value: number }> = [];
    for (const { labels, snapshot } of samples()) {
      let cumulative = 0;
      for (let i = 0; i < LE.length; i++) {
        cumulative += snapshot.counts[i] ?? 0;
        values.push({
          metricName: `${name}_bucket`,
          labels: { ...labels, le: LE[i]! },
          value: cumulative,
        });
      }
      values.push({
        metricName: `${name}_bucket`,
        labels: { ...labels, le: "+Inf" },
        value: snapshot.count,
      });
      values.push({ metricName: `${name}_sum`, labels, value: snapshot.sumMs / 1000 });
      values.push({ metricName: `${name}_count`, labels, value: snapshot.count });
    }
    return { name, help, type: "histogram", aggregator: "sum", values };
  };
  const metric = { name, help, type: "histogram", aggregator: "sum", get, reset() {} };
  return metric as unknown as Metric;
}
