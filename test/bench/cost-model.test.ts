import { describe, expect, it } from "vitest";
import {
  activitySeconds,
  BENCH_NODE_COUNTS,
  costTable,
  formatCostTable,
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
});

describe("HTTP billed fraction", () => {
  it("window is 1 - e^(-lambda a), a = max(1 s, d rounded up to 100 ms)", () => {
    expect(httpActiveFraction(1.5, 0.05)).toBeCloseTo(1 - Math.exp(-1.5), 12);
    expect(httpActiveFraction(1.5, 0.05, "window")).toBeCloseTo(1 - Math.exp(-1.5), 12);
    expect(httpActiveFraction(0.2, 2, "window")).toBeCloseTo(1 - Math.exp(-0.4), 12);
    // 1.01 s is billed 1.1 s.
    expect(httpActiveFraction(0.5, 1.01, "window")).toBeCloseTo(1 - Math.exp(-0.55), 12);
  });

  it("perExecution is lambda a, past wall time when requests are frequent", () => {
    expect(httpActiveFraction(0.5, 1.01, "perExecution")).toBeCloseTo(0.55, 12);
    // 20 requests/s of 50 ms, each paying its own 1 s: 20 billed seconds a second.
    expect(httpActiveFraction(20, 0.05, "perExecution")).toBeCloseTo(20, 12);
  });

  it("isolated requests pay one minimum each in both readings", () => {
    // lambda = 0.001/s: 1 request in 1000 s, billed 1 s.
    for (const model of ["window", "perExecution"] as const) {
      expect(httpActiveFraction(0.001, 0.05, model)).toBeCloseTo(0.001, 6);
    }
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
    // Busy all the time: one instance's month (1 - e^-100), not 10 months of execution time.
    expect(c.functions.http.billedSeconds).toBeCloseTo(MONTH_SECONDS, 3);
  });

  it("takes the per-instance concurrency given over the memory size's default", () => {
    // 10 running at once: 3 instances at the 512 MB default of 4, one at 16 (as the Bicep template sets).
    const at = (httpPerInstanceConcurrency?: number) =>
      monthlyCost(
        1000,
        counts({ perNodeMinute: { httpExecutions: 6, httpExecutionSeconds: 0.6 } }),
        { instanceMemoryMB: 512, sweepPassesPerMinute: 0, applyFreeGrant: false, httpPerInstanceConcurrency },
      ).functions.http.instances;
    expect(at()).toBe(3);
    expect(at(16)).toBe(1);
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

  it("bills back-to-back passes past wall time only when every execution pays its own round-up", () => {
    // 7.55 s passes, billed 7.6 s each, 60 / 7.55 a minute: 60.4 billed seconds a minute.
    const timer = (httpBilling: "window" | "perExecution") =>
      monthlyCost(1000, counts({ perSweepPass: { seconds: [{ nodes: 1000, seconds: 7.55 }] } }), {
        instanceMemoryMB: 2048,
        sweepPassesPerMinute: 8,
        applyFreeGrant: false,
        httpBilling,
      }).functions.timer;
    expect(timer("window").billedSeconds).toBe(MONTH_SECONDS);
    expect(timer("perExecution").billedSeconds).toBeCloseTo((60 / 7.55) * 7.6 * MONTH_MINUTES, 6);
  });
});

describe("the free grant", () => {
  it("is taken once, in full, off a load above it", () => {
    // 1,000 nodes at 512 MB: 500 requests/s of 100 ms keep 13 instances busy all month
    // (16.8 M GB-s, 1.3 billion executions), far above the grant of either.
    const at = (applyFreeGrant: boolean) =>
      monthlyCost(
        1000,
        counts({ perNodeMinute: { httpExecutions: 30, httpExecutionSeconds: 3 } }),
        { instanceMemoryMB: 512, sweepPassesPerMinute: 1, applyFreeGrant },
      );
    const granted = at(true);
    const f = granted.functions;
    expect(f.freeGbSeconds).toBe(100_000);
    expect(f.freeExecutions).toBe(250_000);
    // 100,000 GB-s x $0.000026 + 0.25 M executions x $0.40 = $2.70, once (HTTP and timer together).
    expect(f.usdNoGrant - f.usd).toBeCloseTo(2.7, 9);
    expect(granted.totalUsdNoGrant - granted.totalUsd).toBeCloseTo(2.7, 9);
    expect(at(false).totalUsd).toBeCloseTo(granted.totalUsdNoGrant, 9);
    expect(at(false).functions.freeGbSeconds).toBe(0);
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
    expect(() => monthlyCost(10, counts({}), { ...ok, httpPerInstanceConcurrency: 0 })).toThrow(RangeError);
  });
});
