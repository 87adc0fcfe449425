import { describe, expect, it } from "vitest";
import {
  ClientLatency,
  LATENCY_BOUNDS_MS,
  LATENCY_BUCKETS,
  LatencyHistogram,
  latencyPercentiles,
  latencyQuantile,
  latencySince,
} from "../../agent/engine/latency.ts";

/** Index of the bucket whose upper bound is `ms`. */
const bucketOf = (ms: number): number => LATENCY_BOUNDS_MS.indexOf(ms);

describe("LatencyHistogram", () => {
  it("has log-spaced bounds from 50 µs to 60 s, each at most 1.7x the one before", () => {
    expect(LATENCY_BOUNDS_MS[0]).toBe(0.05);
    expect(LATENCY_BOUNDS_MS.at(-1)).toBe(60_000);
    expect(LATENCY_BUCKETS).toBe(LATENCY_BOUNDS_MS.length + 1);
    for (let i = 1; i < LATENCY_BOUNDS_MS.length; i++) {
      const ratio = LATENCY_BOUNDS_MS[i]! / LATENCY_BOUNDS_MS[i - 1]!;
      expect(ratio).toBeGreaterThan(1);
      expect(ratio).toBeLessThanOrEqual(5 / 3);
    }
  });

  it("counts a duration in the first bucket whose bound is at or above it", () => {
    const h = new LatencyHistogram();
    h.record(0); // below everything: first bucket
    h.record(0.05); // on a bound: that bucket (Prometheus `le`)
    h.record(0.0501); // just above: the next one
    h.record(2); // on 2 ms
    h.record(60_000); // the highest bound
    h.record(60_001); // above it: the overflow bucket
    const counts = Array.from(h.counts);
    expect(counts[0]).toBe(2);
    expect(counts[1]).toBe(1);
    expect(counts[bucketOf(2)]).toBe(1);
    expect(counts[bucketOf(60_000)]).toBe(1);
    expect(counts[LATENCY_BUCKETS - 1]).toBe(1);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(6);
    expect(h.count).toBe(6);
    expect(h.sumMs).toBeCloseTo(0 + 0.05 + 0.0501 + 2 + 60_000 + 60_001, 9);
  });

  it("snapshots are copies, and the difference of two is what happened between them", () => {
    const h = new LatencyHistogram();
    h.record(1);
    const before = h.snapshot();
    h.record(1);
    h.record(10);
    const after = h.snapshot();
    expect(before.count).toBe(1);
    const between = latencySince(after, before);
    expect(between.count).toBe(2);
    expect(between.sumMs).toBe(11);
    expect(between.counts[bucketOf(1)]).toBe(1);
    expect(between.counts[bucketOf(10)]).toBe(1);
    expect(between.counts.reduce((a, b) => a + b, 0)).toBe(2);
  });
});

describe("latencyQuantile", () => {
  const counts = (entries: Array<[bucket: number, n: number]>): number[] => {
    const c = new Array<number>(LATENCY_BUCKETS).fill(0);
    for (const [i, n] of entries) c[i] = n;
    return c;
  };

  it("is 0 for an empty histogram", () => {
    expect(latencyQuantile(counts([]), 0.5)).toBe(0);
    expect(latencyPercentiles(counts([]))).toEqual({ p50: 0, p99: 0 });
  });

  it("interpolates linearly inside the bucket, as histogram_quantile() does", () => {
    // 100 requests in (0.1, 0.15] ms.
    const c = counts([[bucketOf(0.15), 100]]);
    expect(latencyQuantile(c, 0.5)).toBeCloseTo(0.125, 12);
    expect(latencyQuantile(c, 0.99)).toBeCloseTo(0.1495, 12);
  });

  it("finds p50 among the fast requests and p99 among the slow ones", () => {
    // 90 requests in (0.05, 0.075] ms, 10 in (150, 200] ms.
    const c = counts([
      [bucketOf(0.075), 90],
      [bucketOf(200), 10],
    ]);
    expect(latencyQuantile(c, 0.5)).toBeCloseTo(0.05 + (0.025 * 50) / 90, 12);
    expect(latencyQuantile(c, 0.99)).toBeCloseTo(150 + (50 * 9) / 10, 12);
    expect(latencyPercentiles(c)).toEqual({ p50: 0.064, p99: 195 });
  });

  it("answers the highest bound for requests slower than it", () => {
    expect(latencyQuantile(counts([[LATENCY_BUCKETS - 1, 3]]), 0.5)).toBe(60_000);
  });
});

describe("ClientLatency", () => {
  it("times each request with the injected clock and counts those in flight", () => {
    let now = 1000;
    const latency = new ClientLatency(() => now);
    const a = latency.begin(latency.read);
    now += 0.3;
    const b = latency.begin(latency.write);
    const c = latency.begin(null);
    expect(latency.inFlight).toBe(3);
    now += 1.7; // a: 2 ms, b: 1.7 ms
    expect(a.done("value")).toBe("value");
    expect(() => b.failed(new Error("boom"))).toThrow("boom");
    c.done(undefined);
    expect(latency.inFlight).toBe(0);
    const snap = latency.snapshot();
    expect(snap.read.count).toBe(1);
    expect(snap.read.counts[bucketOf(2)]).toBe(1);
    expect(snap.write.count).toBe(1);
    expect(snap.write.counts[bucketOf(2)]).toBe(1);
    expect(snap.write.sumMs).toBeCloseTo(1.7, 9);
    // The untimed request was in flight but is in no histogram.
    expect(snap.flush.count + snap.trim.count + snap.zero.count).toBe(0);
  });

  it("reuses timings: the hot path makes no new object once warm", () => {
    const latency = new ClientLatency(() => 0);
    const first = [latency.begin(latency.read), latency.begin(latency.read)];
    for (const t of first) t.done(undefined);
    const again = [latency.begin(latency.write), latency.begin(latency.write)];
    expect(new Set([...first, ...again]).size).toBe(2);
    // A third concurrent request needs one more.
    const third = latency.begin(latency.write);
    expect(first.includes(third)).toBe(false);
  });
});
