import { describe, expect, it } from "vitest";
import {
  activitySeconds,
  BENCH_NODE_COUNTS,
  billedInstanceSeconds,
  costTable,
  formatCostTable,
  type HttpBillingModel,
  httpActiveFraction,
  interpolate,
  type MeasuredCounts,
  MONTH_MINUTES,
  MONTH_SECONDS,
  monthlyCost,
  PRICE_TABLE,
  PRICES,
} from "../../bench/cost-model.ts";

/** Counts with nothing in them; tests fill in what they look at. */
function counts(over: {
  perNodeMinute?: Partial<MeasuredCounts["perNodeMinute"]>;
  perSweepPass?: Partial<MeasuredCounts["perSweepPass"]>;
}): MeasuredCounts {
  return {
    perNodeMinute: { httpExecutions: 0, httpExecutionSeconds: 0, tableTransactions: 0, blob: {}, ...over.perNodeMinute },
    perSweepPass: {
      seconds: [{ nodes: 1, seconds: 0.2 }],
      tableTransactions: [{ nodes: 1, transactions: 0 }],
      blob: {},
      ...over.perSweepPass,
    },
  };
}

/** A small seeded generator (mulberry32), so the simulation is the same every run. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Billed seconds per second of one instance for simulated Poisson arrivals. */
function simulate(lambda: number, d: number, model: HttpBillingModel, arrivals: number, seed: number): number {
  const random = prng(seed);
  const executions: Array<[number, number]> = [];
  let t = 0;
  for (let i = 0; i < arrivals; i++) {
    t += -Math.log(1 - random()) / lambda;
    executions.push([t, t + d]);
  }
  return billedInstanceSeconds(executions, model) / t;
}

describe("activity periods", () => {
  it("bill at least 1 s, then round up to 100 ms", () => {
    expect(activitySeconds(0.2)).toBe(1);
    expect(activitySeconds(0)).toBe(1);
    expect(activitySeconds(1)).toBe(1);
    expect(activitySeconds(1.01)).toBe(1.1);
    expect(activitySeconds(1.1)).toBe(1.1);
    expect(activitySeconds(2.05)).toBe(2.1);
    expect(activitySeconds(2)).toBe(2);
  });

  it("bill two overlapping requests on one instance once", () => {
    // One activity period [0, 0.5]: one minimum, not two.
    expect(billedInstanceSeconds([[0, 0.3], [0.1, 0.5]], "merged")).toBe(1);
    expect(billedInstanceSeconds([[0, 0.3], [0.1, 0.5]], "perPeriod")).toBe(1);
    // Long ones: the period [0, 2.2] is billed 2.2 s, not 1.5 + 1.2 s.
    expect(billedInstanceSeconds([[0, 1.5], [1, 2.2]], "merged")).toBeCloseTo(2.2, 9);
    expect(billedInstanceSeconds([[0, 1.5], [1, 2.2]], "perPeriod")).toBeCloseTo(2.2, 9);
    // The brief's approximation keeps the instance billed 1 s from each start: 1.1 s here.
    expect(billedInstanceSeconds([[0, 0.3], [0.1, 0.5]], "window")).toBeCloseTo(1.1, 9);
  });

  it("bill separate periods by the chosen reading of the minimum", () => {
    // Two 0.2 s requests 0.5 s apart: two periods.
    const two: Array<[number, number]> = [[0, 0.2], [0.5, 0.7]];
    expect(billedInstanceSeconds(two, "merged")).toBeCloseTo(1.5, 9);
    expect(billedInstanceSeconds(two, "window")).toBeCloseTo(1.5, 9);
    expect(billedInstanceSeconds(two, "perPeriod")).toBe(2);
    // Far apart, every reading bills two minimums.
    const apart: Array<[number, number]> = [[0, 0.2], [5, 5.2]];
    for (const model of ["merged", "window", "perPeriod"] as const) {
      expect(billedInstanceSeconds(apart, model)).toBeCloseTo(2, 9);
    }
  });
});

describe("HTTP billed fraction", () => {
  it("window is the brief's formula, 1 - e^(-lambda max(1, d))", () => {
    expect(httpActiveFraction(1.5, 0.05, "window")).toBeCloseTo(1 - Math.exp(-1.5), 12);
    expect(httpActiveFraction(0.2, 2, "window")).toBeCloseTo(1 - Math.exp(-0.4), 12);
  });

  it("isolated requests pay one minimum each in every reading", () => {
    // lambda = 0.001/s: 1 request in 1000 s, billed 1 s.
    for (const model of ["merged", "window", "perPeriod"] as const) {
      expect(httpActiveFraction(0.001, 0.05, model)).toBeCloseTo(0.001, 5);
    }
  });

  it("agrees with a simulation of the billing rule", () => {
    const cases: Array<[number, number]> = [
      [1.5, 0.05],
      [2, 0.5],
      [3, 0.2],
      [0.3, 1.37],
    ];
    for (const [lambda, d] of cases) {
      for (const model of ["merged", "window", "perPeriod"] as const) {
        const analytic = httpActiveFraction(lambda, d, model);
        const simulated = simulate(lambda, d, model, 100_000, 7);
        expect(Math.abs(analytic - simulated) / simulated, `${model} lambda=${lambda} d=${d}`).toBeLessThan(0.01);
      }
    }
  });

  it("never bills an instance past wall time unless every period pays its own minimum", () => {
    for (const lambda of [0.5, 5, 50, 500]) {
      expect(httpActiveFraction(lambda, 0.05, "merged")).toBeLessThanOrEqual(1);
      expect(httpActiveFraction(lambda, 0.05, "window")).toBeLessThanOrEqual(1);
    }
    // 20 requests/s of 50 ms: about 7.4 periods a second, each paying 1 s.
    expect(httpActiveFraction(20, 0.05, "perPeriod")).toBeGreaterThan(7);
  });

  it("shares an instance between concurrent executions", () => {
    // 100 requests/s of 100 ms: 10 running at once on one 16-wide instance.
    const nodes = 1000;
    const c = monthlyCost(
      nodes,
      counts({ perNodeMinute: { httpExecutions: 6, httpExecutionSeconds: 0.6 } }),
      { instanceMemoryMB: 2048, sweepPassesPerMinute: 0, applyFreeGrant: false },
    );
    expect(c.functions.http.meanConcurrency).toBeCloseTo(10, 9);
    expect(c.functions.http.instances).toBe(1);
    const executionSeconds = c.functions.http.executions * 0.1;
    expect(c.functions.http.billedSeconds).toBeLessThanOrEqual(MONTH_SECONDS);
    expect(c.functions.http.billedSeconds).toBeLessThan(executionSeconds / 9);
  });

  it("adds instances by mean concurrency over per-instance concurrency", () => {
    // Held polls: 2.4 per node-minute of 25 s = one open per node.
    const c = monthlyCost(
      10_000,
      counts({ perNodeMinute: { httpExecutions: 2.4, httpExecutionSeconds: 60 } }),
      { instanceMemoryMB: 2048, sweepPassesPerMinute: 0, applyFreeGrant: false },
    );
    expect(c.functions.http.meanConcurrency).toBeCloseTo(10_000, 6);
    expect(c.functions.http.instances).toBe(625);
    // 0.64 polls/s per instance, each held 25 s: idle e^-16 of the time.
    expect(c.functions.http.activeFraction).toBeCloseTo(1, 6);
    // 625 instances x 2 GB x 2,592,000 s x $0.000026 = $84,240.
    expect(c.functions.http.gbSecondsUsd).toBeCloseTo(84_240, 1);
  });
});

describe("the timer", () => {
  it("bills a 0.2 s pass as 1 s", () => {
    const c = monthlyCost(1000, counts({ perSweepPass: { seconds: [{ nodes: 1000, seconds: 0.2 }] } }), {
      instanceMemoryMB: 512,
      sweepPassesPerMinute: 1,
      applyFreeGrant: false,
    });
    expect(c.functions.timer.passSeconds).toBeCloseTo(0.2, 12);
    expect(c.functions.timer.billedSecondsPerPass).toBe(1);
    expect(c.functions.timer.billedSeconds).toBe(MONTH_MINUTES);
    expect(c.functions.timer.gbSeconds).toBe(MONTH_MINUTES * 0.5);
  });

  it("costs what hand arithmetic says at 8 passes a minute on 512 MB", () => {
    const run = (applyFreeGrant: boolean) =>
      monthlyCost(
        1000,
        counts({ perSweepPass: { seconds: [{ nodes: 1000, seconds: 0.2 }, { nodes: 10_000, seconds: 1.1 }] } }),
        { instanceMemoryMB: 512, sweepPassesPerMinute: 8, applyFreeGrant },
      );
    // 8 x 43,200 = 345,600 passes, each billed 1 s x 0.5 GB = 172,800 GB-s.
    const none = run(false).functions;
    expect(none.timer.passes).toBe(345_600);
    expect(none.timer.executions).toBe(345_600);
    expect(none.timer.gbSeconds).toBe(172_800);
    expect(none.timer.gbSecondsUsd).toBeCloseTo(4.4928, 10); // 172,800 x 0.000026
    expect(none.timer.executionsUsd).toBeCloseTo(0.13824, 10); // 0.3456 M x 0.40
    expect(none.usd).toBeCloseTo(4.63104, 10);
    // With the grant: (172,800 - 100,000) x 0.000026 + (345,600 - 250,000) / 1e6 x 0.40.
    const granted = run(true).functions;
    expect(granted.freeGbSeconds).toBe(100_000);
    expect(granted.freeExecutions).toBe(250_000);
    expect(granted.usd).toBeCloseTo(1.8928 + 0.03824, 10);
    expect(granted.usdNoGrant).toBeCloseTo(4.63104, 10);
  });

  it("reads the pass duration from the measured points", () => {
    const points = { seconds: [{ nodes: 1000, seconds: 0.2 }, { nodes: 10_000, seconds: 1.1 }] };
    const settings = { instanceMemoryMB: 2048 as const, sweepPassesPerMinute: 8, applyFreeGrant: false };
    const at10k = monthlyCost(10_000, counts({ perSweepPass: points }), settings).functions.timer;
    expect(at10k.passSeconds).toBeCloseTo(1.1, 12);
    expect(at10k.billedSecondsPerPass).toBe(1.1);
    const at20k = monthlyCost(20_000, counts({ perSweepPass: points }), settings).functions.timer;
    expect(at20k.passSeconds).toBeCloseTo(2.1, 12); // extrapolated: 0.1 s per 1,000 nodes
    expect(at20k.billedSecondsPerPass).toBe(2.1);
  });

  it("runs back to back when a pass outlasts its interval", () => {
    const c = monthlyCost(1000, counts({ perSweepPass: { seconds: [{ nodes: 1000, seconds: 10 }] } }), {
      instanceMemoryMB: 2048,
      sweepPassesPerMinute: 8,
      applyFreeGrant: false,
    }).functions.timer;
    expect(c.saturated).toBe(true);
    expect(c.passes).toBe(6 * MONTH_MINUTES);
    expect(c.billedSeconds).toBe(MONTH_SECONDS);
  });
});

describe("the free grant", () => {
  it("never makes a cost negative and is taken once", () => {
    const grantUsd = PRICES.freeGrantGbSeconds * PRICES.functionsGbSecondUsd + (PRICES.freeGrantExecutions / 1e6) * PRICES.functionsMillionExecutionsUsd;
    for (const nodes of [1, 3, 100, 1000, 10_000]) {
      for (const execs of [0, 0.1, 30]) {
        const c = monthlyCost(
          nodes,
          counts({ perNodeMinute: { httpExecutions: execs, httpExecutionSeconds: execs * 0.05, tableTransactions: 2 } }),
          { instanceMemoryMB: 512, sweepPassesPerMinute: 1, applyFreeGrant: true },
        );
        const f = c.functions;
        expect(f.gbSecondsUsd).toBeGreaterThanOrEqual(0);
        expect(f.executionsUsd).toBeGreaterThanOrEqual(0);
        expect(f.usd).toBeGreaterThanOrEqual(0);
        expect(c.totalUsd).toBeGreaterThanOrEqual(0);
        expect(f.freeGbSeconds).toBeLessThanOrEqual(f.gbSeconds);
        expect(f.freeExecutions).toBeLessThanOrEqual(f.executions);
        expect(f.usdNoGrant - f.usd).toBeLessThanOrEqual(grantUsd + 1e-9);
        expect(c.totalUsdNoGrant).toBeGreaterThanOrEqual(c.totalUsd);
      }
    }
  });

  it("covers a small load entirely", () => {
    // One pass a minute of 0.2 s at 512 MB: 21,600 GB-s and 43,200 executions.
    const c = monthlyCost(3, counts({}), { instanceMemoryMB: 512, sweepPassesPerMinute: 1, applyFreeGrant: true });
    expect(c.functions.gbSeconds).toBe(21_600);
    expect(c.functions.usd).toBe(0);
    expect(c.functions.usdNoGrant).toBeCloseTo(21_600 * 0.000026 + 0.0432 * 0.4, 10);
  });
});

describe("storage", () => {
  const perNode = { tableTransactions: 40, blob: { other: 0.5 } };
  // A pass reads and writes about 2 rows per node.
  const perPass = { tableTransactions: [{ nodes: 1000, transactions: 2000 }, { nodes: 10_000, transactions: 20_000 }], blob: { other: 1, listCreate: 1 } };
  const settings = { instanceMemoryMB: 2048 as const, sweepPassesPerMinute: 8, applyFreeGrant: true };

  it("scales Table cost linearly with nodes", () => {
    const at = (n: number) => monthlyCost(n, counts({ perNodeMinute: perNode, perSweepPass: perPass }), settings).table.usd;
    expect(at(2000)).toBeCloseTo(2 * at(1000), 10);
    expect(at(10_000)).toBeCloseTo(10 * at(1000), 10);
    // (1000 x 40 + 8 x 2000) per minute x 43,200 / 10,000 x $0.00036.
    expect(at(1000)).toBeCloseTo(((1000 * 40 + 8 * 2000) * MONTH_MINUTES * 0.00036) / 1e4, 10);
  });

  it("adds the daily housekeeping once a day, whatever the node count", () => {
    const at = (n: number, perDay?: { tableTransactions: number }) =>
      monthlyCost(n, { ...counts({ perNodeMinute: perNode, perSweepPass: perPass }), ...(perDay ? { perDay } : {}) }, settings).table;
    for (const n of [3, 10_000]) {
      expect(at(n, { tableTransactions: 25 }).transactions - at(n).transactions).toBeCloseTo(25 * 30, 6);
    }
    expect(() => at(3, { tableTransactions: -1 })).toThrow(RangeError);
  });

  it("prices Blob operations by type", () => {
    const c = monthlyCost(100, counts({ perNodeMinute: perNode, perSweepPass: perPass }), settings).blob;
    expect(c.byType.other).toBe((100 * 0.5 + 8) * MONTH_MINUTES);
    expect(c.byType.listCreate).toBe(8 * MONTH_MINUTES);
    expect(c.usd).toBeCloseTo((c.byType.other * 0.004 + c.byType.listCreate * 0.05) / 1e4, 10);
  });
});

describe("measured points", () => {
  const pts = [{ nodes: 1000, seconds: 0.2 }, { nodes: 10_000, seconds: 1.1 }];
  it("interpolate and extrapolate linearly, hold one point, never go below 0", () => {
    expect(interpolate(pts, 5500, "seconds")).toBeCloseTo(0.65, 12);
    expect(interpolate(pts, 100, "seconds")).toBeCloseTo(0.11, 12);
    expect(interpolate(pts, 0, "seconds")).toBeCloseTo(0.1, 12);
    expect(interpolate([{ nodes: 1000, seconds: 0.3 }], 10_000, "seconds")).toBe(0.3);
    expect(interpolate([{ nodes: 10, seconds: 1 }, { nodes: 20, seconds: 2 }], 0, "seconds")).toBe(0);
  });
});

describe("the Markdown table", () => {
  it("has one row per bench node count and the expected columns", () => {
    const rows = costTable(
      counts({ perNodeMinute: { httpExecutions: 30, httpExecutionSeconds: 1.5, tableTransactions: 30 } }),
      { instanceMemoryMB: 2048, sweepPassesPerMinute: 8, applyFreeGrant: true },
    );
    expect(rows.map((r) => r.nodes)).toEqual([...BENCH_NODE_COUNTS]);
    expect(BENCH_NODE_COUNTS).toEqual([3, 100, 1000, 10_000]);
    const lines = formatCostTable(rows).split("\n");
    expect(lines).toHaveLength(6);
    expect(lines[0]).toBe(
      "| nodes | Functions $/month | Table $/month | Blob $/month | total $/month | $/node-month | total $/month, no free grant |",
    );
    expect(lines.slice(2).map((l) => l.split("|")[1]!.trim())).toEqual(["3", "100", "1,000", "10,000"]);
    for (const line of lines) expect(line.split("|")).toHaveLength(9);
    for (const line of lines.slice(2)) expect(line).toMatch(/^\| [\d,]+ (\| (\$[\d,.]+|<\$0\.0001) ){6}\|$/);
  });
});

describe("prices.json", () => {
  it("gives every entry a value, unit, source, read date and confirmed flag", () => {
    const entries = Object.entries(PRICE_TABLE.prices);
    expect(entries.length).toBeGreaterThan(10);
    for (const [name, entry] of entries) {
      const e = entry as Record<string, unknown>;
      expect(e.value, name).not.toBeUndefined();
      expect(typeof e.unit === "string" && e.unit.length > 0, `${name} unit`).toBe(true);
      expect(typeof e.source === "string" && e.source.length > 0, `${name} source`).toBe(true);
      expect(e.read, `${name} read`).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(typeof e.confirmed, `${name} confirmed`).toBe("boolean");
      if (e.confirmed === false) expect(typeof e.note === "string" && e.note.length > 0, `${name} note`).toBe(true);
    }
  });

  it("is what the model uses", () => {
    expect(PRICES.functionsGbSecondUsd).toBe(0.000026);
    expect(PRICES.functionsMillionExecutionsUsd).toBe(0.4);
    expect(PRICES.minimumActivitySeconds).toBe(1);
    expect(PRICES.activityRoundingSeconds).toBe(0.1);
    expect(PRICES.httpDefaultConcurrency).toEqual({ 512: 4, 2048: 16, 4096: 32 });
    expect(PRICES.tablePer10kUsd).toBe(0.00036);
  });
});

describe("inputs", () => {
  it("are checked", () => {
    const ok = { instanceMemoryMB: 2048 as const, sweepPassesPerMinute: 8, applyFreeGrant: true };
    expect(() => monthlyCost(0, counts({}), ok)).toThrow(RangeError);
    expect(() => monthlyCost(10, counts({}), { ...ok, instanceMemoryMB: 1024 as 2048 })).toThrow(RangeError);
    expect(() => monthlyCost(10, counts({ perNodeMinute: { tableTransactions: -1 } }), ok)).toThrow(RangeError);
    expect(() => monthlyCost(10, counts({ perSweepPass: { seconds: [] } }), ok)).toThrow(RangeError);
  });
});
