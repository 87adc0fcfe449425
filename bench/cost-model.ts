/**
 * The control plane's monthly bill at a given node count, from what a bench
 * run counts: a pure model (no I/O besides the price table it imports).
 *
 * Inputs are normalised per node-minute (HTTP executions and their summed
 * seconds, Table and Blob transactions made for nodes) and per sweep pass
 * (the timer: its duration and Table transactions as measured points over
 * node count, its Blob transactions), plus housekeeping per day (the event
 * log's retention). A month is 30 days = 43,200 minutes.
 *
 * Prices and rules come from ./prices.json; each entry there names its source
 * and says whether it was confirmed. The billing rules modelled:
 *
 * 1. On demand, an instance is billed for its memory while it is actively
 *    executing anything; executions overlapping on one instance are billed
 *    once, as that instance's time, and an awaited wait counts as executing.
 *    (includes/functions-flex-consumption-billing-table.md; the IO-bound
 *    example in articles/azure-functions/functions-consumption-costs.md.)
 * 2. Each activity period is billed at least 1 s, and past that rounded up to
 *    100 ms. (articles/azure-functions/flex-consumption-plan.md, Billing.)
 *    The docs do not say whether two periods closer than the first one's
 *    minimum share one billed window or pay two minimums; `httpBilling`
 *    chooses (see HttpBillingModel).
 * 3. GB-s = instance memory MB / 1024 x seconds (the meter is MB-ms divided
 *    by 1,024,000: includes/functions-monitor-metrics-flex-consumption.md),
 *    priced per GB-s; executions priced per million.
 * 4. HTTP functions scale together as one group; every other function, the
 *    timer included, scales on its own instances
 *    (flex-consumption-plan.md, Per-function scaling). So each sweep pass is
 *    its own activity period on its own instance: max(1 s, duration rounded
 *    up to 100 ms). The timer is a singleton that never overlaps itself, so
 *    passes longer than the schedule's interval run back to back instead.
 * 5. HTTP instances needed: the mean concurrency lambda*d divided by the
 *    per-instance concurrency (default by memory size, functions-concurrency.md),
 *    rounded up, at least 1. Requests are spread evenly, so each instance sees
 *    a Poisson stream of lambda/n (the brief took the fraction at the whole
 *    lambda times n; once n > 1 each instance carries a mean concurrency over
 *    c/2, so both are close to always active: at least 1 - e^(-c/2), 0.86 at
 *    c = 4, 0.9997 at c = 16). How the scale controller sizes the group under
 *    bursts above the mean is not documented.
 * 6. The monthly free grant (on demand only) is taken once off the month's
 *    total GB-s and executions, never below 0. (The amounts are unconfirmed:
 *    see prices.json.)
 * 7. Table: every request is one transaction, an entity group transaction
 *    (batch) is one transaction, and requests that fail after authentication
 *    (404, 409, 412) are billed too; the counts passed in must include them.
 * 8. Blob: priced by operation type (write, read, other, list and create
 *    container) on a standard GPv2 hot LRS account
 *    (articles/storage/blobs/map-rest-apis-transaction-categories.md).
 */
import priceTable from "./prices.json" with { type: "json" };

/** The price table as read from prices.json, for tests and reports. */
export const PRICE_TABLE = priceTable;

export const MONTH_MINUTES = 43_200;
export const MONTH_SECONDS = MONTH_MINUTES * 60;
/** The node counts `npm run bench` and the README show. */
export const BENCH_NODE_COUNTS: readonly number[] = [3, 100, 1_000, 10_000];

/** The instance memory sizes Flex Consumption offers. */
export type InstanceMemoryMB = 512 | 2048 | 4096;

/**
 * How activity periods closer together than the 1-s minimum are billed on one
 * instance. An activity period is a stretch in which at least one execution
 * runs on the instance.
 *
 * - `merged` (default): each period opens a billed window of
 *   max(1 s, its length rounded up to 100 ms) from its start; overlapping
 *   windows are billed once. An instance is never billed more than wall time.
 * - `window`: the brief's approximation, 1 - e^(-lambda * max(1 s, d)): every
 *   execution keeps the instance billed for max(1 s, d) from its start. It is
 *   exact for isolated executions, counts extra for periods of several
 *   overlapping executions (up to 1 - d per period; the largest error is
 *   where lambda*d is near 1), and ignores the 100-ms rounding.
 * - `perPeriod`: every period pays its own minimum even when the next starts
 *   within it, so frequent short requests can bill more than wall time (the
 *   pessimistic reading of the docs).
 */
export type HttpBillingModel = "merged" | "window" | "perPeriod";

/** Blob transactions by the operation type the price list uses. */
export interface BlobOps {
  write?: number;
  read?: number;
  other?: number;
  /** List Blobs, List Containers, Create Container. */
  listCreate?: number;
}

/** A measured sweep duration at a node count. */
export interface SecondsAt {
  nodes: number;
  seconds: number;
}

/** Measured Table transactions of one sweep pass at a node count. */
export interface TransactionsAt {
  nodes: number;
  transactions: number;
}

/** What a run counts, normalised. */
export interface MeasuredCounts {
  perNodeMinute: {
    /** HTTP executions (reports, desired-state fetches, ...) per node per minute. */
    httpExecutions: number;
    /** Their summed execution seconds per node per minute (an awaited wait counts in full). */
    httpExecutionSeconds: number;
    /** Table transactions per node per minute, failed ones and batches (1 each) included. */
    tableTransactions: number;
    /** Blob transactions made on behalf of nodes, per node per minute. */
    blob: BlobOps;
  };
  perSweepPass: {
    /** Executions per pass (default 1). */
    executions?: number;
    /** Pass duration over node count; linear between points, extrapolated past them. */
    seconds: readonly SecondsAt[];
    /** Table transactions per pass over node count, likewise. */
    tableTransactions: readonly TransactionsAt[];
    /** Blob transactions per pass. */
    blob: BlobOps;
  };
  /**
   * Housekeeping whatever the node count, per day: the event log's
   * retention (an hourly Query Tables, a day's table dropped) and the day's
   * table made by its first event. A month is 30 days.
   */
  perDay?: {
    tableTransactions: number;
  };
}

export interface CostSettings {
  instanceMemoryMB: InstanceMemoryMB;
  /** Sweep (timer) passes scheduled per minute. */
  sweepPassesPerMinute: number;
  /** Take the monthly free grant off the total (the other total is always reported too). */
  applyFreeGrant: boolean;
  /** HTTP per-instance concurrency; default: the documented default for the memory size. */
  httpPerInstanceConcurrency?: number;
  /** Default `merged`. */
  httpBilling?: HttpBillingModel;
}

/** The numbers the model uses, taken from prices.json (or given, in tests). */
export interface Prices {
  functionsGbSecondUsd: number;
  functionsMillionExecutionsUsd: number;
  freeGrantGbSeconds: number;
  freeGrantExecutions: number;
  minimumActivitySeconds: number;
  activityRoundingSeconds: number;
  mbMillisecondsPerGbSecond: number;
  httpDefaultConcurrency: Readonly<Record<InstanceMemoryMB, number>>;
  tablePer10kUsd: number;
  blobPer10kUsd: Readonly<Required<BlobOps>>;
}

const p = priceTable.prices;
export const PRICES: Prices = {
  functionsGbSecondUsd: p["functions.flex.onDemand.executionTime"].value,
  functionsMillionExecutionsUsd: p["functions.flex.onDemand.executions"].value,
  freeGrantGbSeconds: p["functions.flex.onDemand.freeGrant.gbSeconds"].value,
  freeGrantExecutions: p["functions.flex.onDemand.freeGrant.executions"].value,
  minimumActivitySeconds: p["functions.flex.minimumActivityPeriod"].value,
  activityRoundingSeconds: p["functions.flex.activityRounding"].value,
  mbMillisecondsPerGbSecond: p["functions.flex.mbMillisecondsPerGbSecond"].value,
  httpDefaultConcurrency: {
    512: p["functions.flex.httpDefaultPerInstanceConcurrency"].value["512"],
    2048: p["functions.flex.httpDefaultPerInstanceConcurrency"].value["2048"],
    4096: p["functions.flex.httpDefaultPerInstanceConcurrency"].value["4096"],
  },
  tablePer10kUsd: p["storage.table.transactions"].value,
  blobPer10kUsd: {
    write: p["storage.blob.hot.writeOperations"].value,
    read: p["storage.blob.hot.readOperations"].value,
    other: p["storage.blob.hot.otherOperations"].value,
    listCreate: p["storage.blob.hot.listAndCreateContainerOperations"].value,
  },
};

export interface HttpCost {
  /** Executions per month. */
  executions: number;
  /** Mean execution seconds (d). */
  meanSeconds: number;
  /** Requests per second for the whole group (lambda). */
  arrivalsPerSecond: number;
  /** lambda * d: executions running at once, on average. */
  meanConcurrency: number;
  instances: number;
  /** Billed seconds per second of one instance (at most 1 unless `perPeriod`). */
  activeFraction: number;
  /** Billed instance-seconds per month, all instances. */
  billedSeconds: number;
  gbSeconds: number;
  /** Before the free grant. */
  gbSecondsUsd: number;
  /** Before the free grant. */
  executionsUsd: number;
}

export interface TimerCost {
  /** Executions per month. */
  executions: number;
  /** Passes per month (fewer than scheduled when a pass outlasts the interval). */
  passes: number;
  /** Interpolated duration of one pass at this node count. */
  passSeconds: number;
  /** max(1 s, passSeconds rounded up to 100 ms). */
  billedSecondsPerPass: number;
  billedSeconds: number;
  /** A pass outlasts the scheduled interval: the timer runs back to back. */
  saturated: boolean;
  gbSeconds: number;
  /** Before the free grant. */
  gbSecondsUsd: number;
  /** Before the free grant. */
  executionsUsd: number;
}

export interface FunctionsCost {
  http: HttpCost;
  timer: TimerCost;
  gbSeconds: number;
  executions: number;
  /** The part of the free grant used (0 when it is not applied). */
  freeGbSeconds: number;
  freeExecutions: number;
  /** After the free grant when it is applied. */
  gbSecondsUsd: number;
  executionsUsd: number;
  usd: number;
  /** Without any free grant. */
  usdNoGrant: number;
}

export interface TableCost {
  transactions: number;
  usd: number;
}

export interface BlobCost {
  /** Transactions per month by operation type. */
  byType: Required<BlobOps>;
  transactions: number;
  usd: number;
}

/** One month at one node count. */
export interface MonthlyCost {
  nodes: number;
  settings: Required<CostSettings>;
  functions: FunctionsCost;
  table: TableCost;
  blob: BlobCost;
  /** With the free grant if `settings.applyFreeGrant`. */
  totalUsd: number;
  usdPerNodeMonth: number;
  totalUsdNoGrant: number;
  usdPerNodeMonthNoGrant: number;
}

function check(name: string, value: number, min = 0): void {
  if (!Number.isFinite(value) || value < min) {
    throw new RangeError(`cost model: ${name} must be a finite number >= ${min}, got ${value}`);
  }
}

/**
 * Billed length of one activity period: at least the minimum (1 s), and past
 * it rounded up to the rounding step (100 ms). A period of no length (an
 * execution of 0 s) still pays the minimum.
 */
export function activitySeconds(seconds: number, prices: Prices = PRICES): number {
  if (seconds <= 0) return prices.minimumActivitySeconds;
  const step = prices.activityRoundingSeconds;
  // The epsilon keeps 0.2 / 0.1 = 2.0000000000000004 from rounding up to 0.3.
  const rounded = Math.round(Math.ceil(seconds / step - 1e-9) * step * 1e9) / 1e9;
  return Math.max(prices.minimumActivitySeconds, rounded);
}

/**
 * A measured quantity at `nodes`, from points over node count: linear between
 * the two nearest points, extrapolated along the first or last segment, one
 * point held constant, never below 0.
 */
export function interpolate<K extends string>(
  points: readonly ({ nodes: number } & Record<K, number>)[],
  nodes: number,
  key: K,
): number {
  if (points.length === 0) throw new RangeError(`cost model: no measured points for ${key}`);
  for (const pt of points) {
    check(`${key} point nodes`, pt.nodes);
    check(`${key} at ${pt.nodes} nodes`, pt[key]);
  }
  const sorted = [...points].sort((a, b) => a.nodes - b.nodes);
  if (sorted.length === 1) return sorted[0]![key];
  let i = 0;
  while (i < sorted.length - 2 && nodes > sorted[i + 1]!.nodes) i++;
  const a = sorted[i]!;
  const b = sorted[i + 1]!;
  if (b.nodes === a.nodes) throw new RangeError(`cost model: two ${key} points at ${a.nodes} nodes`);
  const value = a[key] + ((b[key] - a[key]) * (nodes - a.nodes)) / (b.nodes - a.nodes);
  return Math.max(0, value);
}

/**
 * Billed seconds of one instance for concrete executions, [start, end] in
 * seconds, under `model`: the rule itself, which the Poisson formulas below
 * approximate (and which the tests simulate against).
 */
export function billedInstanceSeconds(
  executions: readonly (readonly [number, number])[],
  model: HttpBillingModel = "merged",
  prices: Prices = PRICES,
): number {
  const sorted = [...executions].sort((a, b) => a[0] - b[0]);
  for (const [s, e] of sorted) {
    if (!Number.isFinite(s) || !Number.isFinite(e) || e < s) {
      throw new RangeError(`cost model: bad execution [${s}, ${e}]`);
    }
  }
  const unionLength = (windows: Array<[number, number]>): number => {
    windows.sort((a, b) => a[0] - b[0]);
    let total = 0;
    let curStart = -Infinity;
    let curEnd = -Infinity;
    for (const [s, e] of windows) {
      if (s > curEnd) {
        if (curEnd > curStart) total += curEnd - curStart;
        curStart = s;
        curEnd = e;
      } else if (e > curEnd) {
        curEnd = e;
      }
    }
    if (curEnd > curStart) total += curEnd - curStart;
    return total;
  };
  if (model === "window") {
    const min = prices.minimumActivitySeconds;
    return unionLength(sorted.map(([s, e]): [number, number] => [s, s + Math.max(min, e - s)]));
  }
  // Activity periods: maximal stretches in which at least one execution runs.
  const periods: Array<[number, number]> = [];
  for (const [s, e] of sorted) {
    const last = periods[periods.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else periods.push([s, e]);
  }
  if (model === "perPeriod") {
    return periods.reduce((sum, [s, e]) => sum + activitySeconds(e - s, prices), 0);
  }
  return unionLength(periods.map(([s, e]): [number, number] => [s, s + activitySeconds(e - s, prices)]));
}

/**
 * For Poisson arrivals at `lambda` per second, every execution lasting `d`
 * seconds (d < the minimum u0): the busy periods B of this M/D/infinity system
 * are d plus K gaps between arrivals, each shorter than d, K geometric. With
 * F(s) = P(B - d <= s), which solves
 *   F(s) = e^(-lambda d) + integral_0^min(s,d) lambda e^(-lambda x) F(s - x) dx,
 * (solved on a grid, F piecewise linear, the kernel integrated exactly),
 * returns over [0, u = u0 - d]:
 *   shortfall = E[(u0 - B)+]                        (the minimum's top-up),
 *   merged    = E[1 - e^(-lambda (u0 - B)+)]        (the part of it before
 *               the next arrival, which is Exp(lambda) after the period ends),
 *   atMostMin = P(B <= u0).
 */
function shortPeriodTerms(
  lambda: number,
  d: number,
  u0: number,
): { shortfall: number; merged: number; atMostMin: number } {
  const u = u0 - d;
  const p0 = Math.exp(-lambda * d);
  if (d < 1e-9) {
    // Executions of no length: every period is a single execution.
    return { shortfall: u, merged: -Math.expm1(-lambda * u), atMostMin: 1 };
  }
  // Step: fine against 1/lambda and 1 ms, coarse enough for about 2e6 operations.
  let h = Math.min(1e-3, d, Math.max(0.2 / lambda, Math.sqrt((d * u) / 2e6)));
  const m = Math.max(1, Math.ceil(d / h - 1e-9));
  h = d / m;
  const J = Math.floor(u / h + 1e-9);
  const size = J + 2;
  // Segment weights of integral lambda e^(-lambda x) F(s - x) dx with F linear:
  // segment k (x in [kh, (k+1)h]) adds q^k (A F[j-k] + B F[j-k-1]).
  const lh = lambda * h;
  const oneMinusQ = -Math.expm1(-lh);
  const q = 1 - oneMinusQ;
  const B = oneMinusQ / lh - q;
  const A = oneMinusQ - B;
  const wA = new Float64Array(m);
  const wB = new Float64Array(m);
  for (let k = 0, qk = 1; k < m; k++, qk *= q) {
    wA[k] = qk * A;
    wB[k] = qk * B;
  }
  const F = new Float64Array(size);
  F[0] = p0;
  for (let j = 1; j < size; j++) {
    const mj = Math.min(j, m);
    let acc = wB[0]! * F[j - 1]!;
    for (let k = 1; k < mj; k++) acc += wA[k]! * F[j - k]! + wB[k]! * F[j - k - 1]!;
    F[j] = Math.min(1, (p0 + acc) / (1 - wA[0]!));
  }
  // Integrate F, and F against lambda e^(-lambda (u - s)), over [0, u], F linear.
  const segment = (a: number, fa: number, b: number, fb: number): [number, number] => {
    const len = b - a;
    if (len <= 0) return [0, 0];
    const ea = Math.exp(-lambda * (u - a));
    const eb = Math.exp(-lambda * (u - b));
    const plain = (len * (fa + fb)) / 2;
    const weighted = fa * (eb - ea) + ((fb - fa) / len) * (len * eb - (eb - ea) / lambda);
    return [plain, weighted];
  };
  let shortfall = 0;
  let merged = 0;
  for (let j = 0; j < J; j++) {
    const [x, y] = segment(j * h, F[j]!, (j + 1) * h, F[j + 1]!);
    shortfall += x;
    merged += y;
  }
  const frac = Math.max(0, u / h - J);
  const atMostMin = Math.min(1, F[J]! + frac * (F[J + 1]! - F[J]!));
  const [x, y] = segment(J * h, F[J]!, u, atMostMin);
  shortfall += x;
  merged += y;
  return { shortfall, merged, atMostMin };
}

/**
 * Billed seconds per second of one instance receiving Poisson arrivals at
 * `lambda` per second, each executing `d` seconds, under `model`.
 *
 * With p0 = e^(-lambda d): the instance is busy 1 - p0 of the time, and busy
 * periods start at r = lambda p0 per second (an arrival finding it idle).
 *   window:    1 - e^(-lambda max(u0, d))
 *   perPeriod: (1 - p0) + r E[(u0 - B)+] + r E[rounding]
 *   merged:    (1 - p0) + p0 E[1 - e^(-lambda (u0 - B)+)] + r E[rounding], at most 1
 * E[rounding], the 100-ms round-up of periods longer than the minimum, is
 * exact for single executions longer than it and taken as half a step for
 * periods of several executions (their length is not on a 100-ms grid); the
 * error is under half a step per such period, and in `merged` the round-up
 * may overlap the next period (not subtracted): both vanish at low load,
 * where periods are single, and at high load, where they merge into one.
 * Assumes every execution lasts the mean d (M/D/infinity); the busy fraction
 * does not depend on that, the minimum's top-up does.
 */
export function httpActiveFraction(
  lambda: number,
  d: number,
  model: HttpBillingModel = "merged",
  prices: Prices = PRICES,
): number {
  check("lambda", lambda);
  check("execution seconds", d);
  if (lambda === 0) return 0;
  const u0 = prices.minimumActivitySeconds;
  if (model === "window") return -Math.expm1(-lambda * Math.max(u0, d));
  const p0 = Math.exp(-lambda * d);
  const busy = -Math.expm1(-lambda * d);
  const r = lambda * p0;
  let shortfall = 0;
  let merged = 0;
  let longer = 1;
  // Past this the periods are so rare (or so long) that their minimums add nothing.
  if (d < u0 && r * u0 > 1e-12) {
    const t = shortPeriodTerms(lambda, d, u0);
    shortfall = t.shortfall;
    merged = t.merged;
    longer = 1 - t.atMostMin;
  }
  const step = prices.activityRoundingSeconds;
  const single = d >= u0 ? p0 * (activitySeconds(d, prices) - d) : 0;
  const several = (step / 2) * Math.max(0, longer - (d >= u0 ? p0 : 0));
  const rounding = r * (single + several);
  if (model === "perPeriod") return busy + r * shortfall + rounding;
  return Math.min(1, busy + p0 * merged + rounding);
}

function blobTotal(ops: BlobOps, name: string): Required<BlobOps> {
  const out = { write: ops.write ?? 0, read: ops.read ?? 0, other: ops.other ?? 0, listCreate: ops.listCreate ?? 0 };
  for (const [k, v] of Object.entries(out)) check(`${name}.${k}`, v);
  return out;
}

function resolveSettings(settings: CostSettings, prices: Prices): Required<CostSettings> {
  const mem = settings.instanceMemoryMB;
  if (!(mem in prices.httpDefaultConcurrency)) {
    throw new RangeError(`cost model: instance memory must be 512, 2048 or 4096 MB, got ${mem}`);
  }
  const concurrency = settings.httpPerInstanceConcurrency ?? prices.httpDefaultConcurrency[mem];
  check("httpPerInstanceConcurrency", concurrency, 1);
  check("sweepPassesPerMinute", settings.sweepPassesPerMinute);
  return {
    instanceMemoryMB: mem,
    sweepPassesPerMinute: settings.sweepPassesPerMinute,
    applyFreeGrant: settings.applyFreeGrant,
    httpPerInstanceConcurrency: concurrency,
    httpBilling: settings.httpBilling ?? "merged",
  };
}

/** The monthly bill at `nodes` nodes. */
export function monthlyCost(
  nodes: number,
  counts: MeasuredCounts,
  settings: CostSettings,
  prices: Prices = PRICES,
): MonthlyCost {
  check("nodes", nodes, 1);
  const s = resolveSettings(settings, prices);
  const perNode = counts.perNodeMinute;
  const pass = counts.perSweepPass;
  check("httpExecutions", perNode.httpExecutions);
  check("httpExecutionSeconds", perNode.httpExecutionSeconds);
  check("tableTransactions", perNode.tableTransactions);
  const execsPerPass = pass.executions ?? 1;
  check("executions per pass", execsPerPass);
  const gbPerInstance = (s.instanceMemoryMB * 1000) / prices.mbMillisecondsPerGbSecond;
  const gbsUsd = (gbs: number) => gbs * prices.functionsGbSecondUsd;
  const execUsd = (n: number) => (n / 1e6) * prices.functionsMillionExecutionsUsd;

  // HTTP: one scale group, Poisson arrivals, n instances sharing them evenly.
  const lambda = (nodes * perNode.httpExecutions) / 60;
  const d = perNode.httpExecutions > 0 ? perNode.httpExecutionSeconds / perNode.httpExecutions : 0;
  const meanConcurrency = lambda * d;
  const instances = lambda > 0 ? Math.max(1, Math.ceil(meanConcurrency / s.httpPerInstanceConcurrency - 1e-9)) : 0;
  const activeFraction = instances > 0 ? httpActiveFraction(lambda / instances, d, s.httpBilling, prices) : 0;
  const httpBilled = instances * activeFraction * MONTH_SECONDS;
  const httpExecutions = nodes * perNode.httpExecutions * MONTH_MINUTES;
  const httpGbs = httpBilled * gbPerInstance;
  const http: HttpCost = {
    executions: httpExecutions,
    meanSeconds: d,
    arrivalsPerSecond: lambda,
    meanConcurrency,
    instances,
    activeFraction,
    billedSeconds: httpBilled,
    gbSeconds: httpGbs,
    gbSecondsUsd: gbsUsd(httpGbs),
    executionsUsd: execUsd(httpExecutions),
  };

  // Timer: each pass its own period on its own instance; never overlapping itself.
  const passSeconds = interpolate(pass.seconds, nodes, "seconds");
  const perPass = activitySeconds(passSeconds, prices);
  const scheduled = s.sweepPassesPerMinute;
  const passesPerMinute = passSeconds > 0 ? Math.min(scheduled, 60 / passSeconds) : scheduled;
  let billedPerMinute = passesPerMinute * perPass;
  // Back-to-back billed windows on the one instance merge unless every period pays its own minimum.
  if (s.httpBilling !== "perPeriod") billedPerMinute = Math.min(60, billedPerMinute);
  const timerBilled = billedPerMinute * MONTH_MINUTES;
  const timerExecutions = passesPerMinute * execsPerPass * MONTH_MINUTES;
  const timerGbs = timerBilled * gbPerInstance;
  const timer: TimerCost = {
    executions: timerExecutions,
    passes: passesPerMinute * MONTH_MINUTES,
    passSeconds,
    billedSecondsPerPass: perPass,
    billedSeconds: timerBilled,
    saturated: passesPerMinute < scheduled,
    gbSeconds: timerGbs,
    gbSecondsUsd: gbsUsd(timerGbs),
    executionsUsd: execUsd(timerExecutions),
  };

  // The free grant, once, off the total.
  const gbSeconds = httpGbs + timerGbs;
  const executions = httpExecutions + timerExecutions;
  const freeGbSeconds = s.applyFreeGrant ? Math.min(gbSeconds, prices.freeGrantGbSeconds) : 0;
  const freeExecutions = s.applyFreeGrant ? Math.min(executions, prices.freeGrantExecutions) : 0;
  const fnGbsUsd = gbsUsd(gbSeconds - freeGbSeconds);
  const fnExecUsd = execUsd(executions - freeExecutions);
  const functions: FunctionsCost = {
    http,
    timer,
    gbSeconds,
    executions,
    freeGbSeconds,
    freeExecutions,
    gbSecondsUsd: fnGbsUsd,
    executionsUsd: fnExecUsd,
    usd: fnGbsUsd + fnExecUsd,
    usdNoGrant: gbsUsd(gbSeconds) + execUsd(executions),
  };

  // Storage: per node-minute plus per pass actually run.
  const passTable = interpolate(pass.tableTransactions, nodes, "transactions");
  const dailyTable = counts.perDay?.tableTransactions ?? 0;
  check("perDay.tableTransactions", dailyTable);
  const tableTx =
    (nodes * perNode.tableTransactions + passesPerMinute * passTable) * MONTH_MINUTES +
    dailyTable * (MONTH_MINUTES / 1440);
  const table: TableCost = { transactions: tableTx, usd: (tableTx / 1e4) * prices.tablePer10kUsd };
  const nodeBlob = blobTotal(perNode.blob, "perNodeMinute.blob");
  const passBlob = blobTotal(pass.blob, "perSweepPass.blob");
  const byType = {} as Required<BlobOps>;
  let blobTx = 0;
  let blobUsd = 0;
  for (const k of ["write", "read", "other", "listCreate"] as const) {
    byType[k] = (nodes * nodeBlob[k] + passesPerMinute * passBlob[k]) * MONTH_MINUTES;
    blobTx += byType[k];
    blobUsd += (byType[k] / 1e4) * prices.blobPer10kUsd[k];
  }
  const blob: BlobCost = { byType, transactions: blobTx, usd: blobUsd };

  const totalUsd = functions.usd + table.usd + blob.usd;
  const totalUsdNoGrant = functions.usdNoGrant + table.usd + blob.usd;
  return {
    nodes,
    settings: s,
    functions,
    table,
    blob,
    totalUsd,
    usdPerNodeMonth: totalUsd / nodes,
    totalUsdNoGrant,
    usdPerNodeMonthNoGrant: totalUsdNoGrant / nodes,
  };
}

/** The bill at each of `nodeCounts` (default: 3, 100, 1,000 and 10,000 nodes). */
export function costTable(
  counts: MeasuredCounts,
  settings: CostSettings,
  nodeCounts: readonly number[] = BENCH_NODE_COUNTS,
  prices: Prices = PRICES,
): MonthlyCost[] {
  return nodeCounts.map((n) => monthlyCost(n, counts, settings, prices));
}

/** Dollars for a table cell: cents from $1 up, four decimals below, never "-0". */
export function formatUsd(usd: number): string {
  if (usd === 0) return "$0";
  if (usd >= 1) {
    return `$${usd.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  }
  if (usd >= 0.0001) return `$${usd.toFixed(4)}`;
  return "<$0.0001";
}

/**
 * The bill as a Markdown table, one row per node count: Functions, Table and
 * Blob $ per month, the total and $ per node-month (with the free grant when
 * the settings apply it), and the total without the free grant.
 */
export function formatCostTable(rows: readonly MonthlyCost[]): string {
  const lines = [
    "| nodes | Functions $/month | Table $/month | Blob $/month | total $/month | $/node-month | total $/month, no free grant |",
    "|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.nodes.toLocaleString("en-US")} | ${formatUsd(r.functions.usd)} | ${formatUsd(r.table.usd)} | ` +
        `${formatUsd(r.blob.usd)} | ${formatUsd(r.totalUsd)} | ${formatUsd(r.usdPerNodeMonth)} | ` +
        `${formatUsd(r.totalUsdNoGrant)} |`,
    );
  }
  return lines.join("\n");
}
