/**
 * A volume's numbers for one report: counters cumulative since open,
 * latency percentiles over the requests completed since the previous take.
 *
 * The shape is contract/node.ts `VolumeStats`, imported as a type only: the
 * agent bundle carries no zod. Percentiles are 0 for a window without
 * requests, and 60000 (the highest bucket bound) for ones slower than that.
 *
 * Concurrency: take() is synchronous; one reader per window (two report
 * loops sharing a window would split the requests between them).
 */
import type { VolumeStats } from "../../contract/node.ts";
import { type LatencySnapshot, latencyPercentiles, latencySince } from "./latency.ts";
import type { VolumeMetrics } from "./volume.ts";

export type { VolumeStats };

/** The counters of a volume's stats: cumulative since open, plus the queue depth now. */
export type IoTotals = Omit<VolumeStats, "readLatencyMs" | "writeLatencyMs">;

/** The counters out of a metrics snapshot, for reports and the status API alike. */
export function ioTotals(m: VolumeMetrics): IoTotals {
  return {
    readOps: m.client.reads,
    writeOps: m.client.writes,
    bytesRead: m.client.bytesRead,
    bytesWritten: m.client.bytesWritten,
    errors: m.errors,
    throttlePauses: m.throttle.pauses,
    queueDepth: m.queueDepth,
  };
}

/** Successive windows over one volume's metrics. */
export class StatsWindow {
  readonly #metrics: () => VolumeMetrics;
  #read: LatencySnapshot;
  #write: LatencySnapshot;

  /** The first window starts now: requests completed before are not in it. */
  constructor(metrics: () => VolumeMetrics) {
    this.#metrics = metrics;
    const m = metrics();
    this.#read = m.latency.read;
    this.#write = m.latency.write;
  }

  /** Close the current window and start the next. */
  take(): VolumeStats {
    const m = this.#metrics();
    const stats: VolumeStats = {
      ...ioTotals(m),
      readLatencyMs: latencyPercentiles(latencySince(m.latency.read, this.#read).counts),
      writeLatencyMs: latencyPercentiles(latencySince(m.latency.write, this.#write).counts),
    };
    this.#read = m.latency.read;
    this.#write = m.latency.write;
    return stats;
  }
}
