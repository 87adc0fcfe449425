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
 * 2. Each activity period (a stretch in which at least one execution runs on
 *    the instance) is billed at least 1 s, and past that rounded up to
 *    100 ms. (articles/azure-functions/flex-consumption-plan.md, Billing.)
 *    The docs do not say whether two periods closer than the first one's
 *    minimum share one billed window or pay two minimums. HTTP executions are
 *    billed in one of two closed forms (`httpBilling`, see HttpBillingModel),
 *    every execution taken to last the mean: `window` (default) keeps the
 *    instance billed for max(1 s, the execution rounded up to 100 ms) from
 *    each execution's start and bills overlapping windows once;
 *    `perExecution` has every execution pay that alone. Both are exact for
 *    isolated executions; `window` never bills less than the rule read as one
 *    window (for executions of up to 0.9 s), `perExecution` never less than
 *    either reading. Where they are off, the bill comes out high, not low.
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
 *    per-instance concurrency (default by memory size, functions-concurrency.md;
 *    the Bicep template sets it), rounded up, at least 1. Requests are spread
 *    evenly, so each instance sees a Poisson stream of lambda/n. (The simple
 *    approximation, the whole group's fraction at lambda times n instances,
 *    differs little: once n > 1 each instance carries a mean concurrency over
 *    c/2, so both are close to always active: at least 1 - e^(-c/2), 0.86 at
 *    c = 4, 0.9997 at c = 16.) How the scale controller sizes the group under
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
type InstanceMemoryMB = 512 | 2048 | 4096;

/**
 * How executions closer together than the 1-s minimum are billed on one
 * instance, as a closed form for Poisson arrivals at lambda per second, every
 * execution lasting the mean d seconds. a = activitySeconds(d): max(1 s,
 * d rounded up to 100 ms).
 *
 * - `window` (default): each execution keeps its instance billed for a from
 *   its start; overlapping windows are billed once. Billed seconds per second
 *   of an instance: 1 - e^(-lambda a), never more than wall time. Exact for
 *   isolated executions. For a period of several overlapping executions, the
 *   docs' rule read as one window bills a minimum (or the period rounded up)
 *   from the period's start; for d <= 0.9 s the executions' windows cover
 *   that, so this never bills less than the rule and errs on the side of a
 *   higher bill (by up to a - d per period). Past 0.9 s it can fall short of
 *   a period's 100-ms round-up by less than one step.
 * - `perExecution`: the pessimistic reading, where no two executions share a
 *   minimum: billed seconds per second = lambda a, which exceeds wall time
 *   once lambda a > 1.
 */
type HttpBillingModel = "window" | "perExecution";

/** Blob transactions by the operation type the price list uses. */
interface BlobOps {
  write?: number;
  read?: number;
  other?: number;
  /** List Blobs, List Containers, Create Container. */
  listCreate?: number;
}

/** A measured sweep duration at a node count. */
interface SecondsAt {
  nodes: number;
  seconds: number;
}

/** Measured Table transactions of one sweep pass at a node count. */
interface TransactionsAt {
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

interface CostSettings {
  instanceMemoryMB: InstanceMemoryMB;
  /** Sweep (timer) passes scheduled per minute. */
  sweepPassesPerMinute: number;
  /** Take the monthly free grant off the total (the other total is always reported too). */
  applyFreeGrant: boolean;
  /**
   * HTTP per-instance concurrency; default: the documented default for the
   * memory size (prices.json; 4 at 512 MB, where the Bicep template sets 16).
   */
  httpPerInstanceConcurrency?: number;
  /** Default `window`. Also decides whether back-to-back timer passes share billed time. */
  httpBilling?: HttpBillingModel;
}

/** The numbers the model uses, taken from prices.json (or given, in tests). */
interface Prices {
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

interface HttpCost {
  /** Executions per month. */
  executions: number;
  /** lambda * d: executions running at once, on average. */
  meanConcurrency: number;
  instances: number;
  /** Billed seconds per second of one instance (above 1 only under `perExecution`). */
  activeFraction: number;
  /** Billed instance-seconds per month, all instances. */
  billedSeconds: number;
  gbSeconds: number;
  /** Before the free grant. */
  gbSecondsUsd: number;
  /** Before the free grant. */
  executionsUsd: number;
}

interface TimerCost {
  /** Executions per month, one a pass. */
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

interface FunctionsCost {
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

interface TableCost {
  transactions: number;
  usd: number;
}

interface BlobCost {
  /** Transactions per month by operation type. */
  byType: Required<BlobOps>;
  transactions: number;
  usd: number;
}

/** One month at one node count. */
interface MonthlyCost {
  nodes: number;
  functions: FunctionsCost;
  table: TableCost;
  blob: BlobCost;
  /** With the free grant if the settings apply it. */
  totalUsd: number;
  /** totalUsd / nodes. */
  usdPerNodeMonth: number;
  totalUsdNoGrant: number;
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
 * Billed seconds per second of one instance receiving Poisson arrivals at
 * `lambda` per second, each executing `d` seconds, under `model` (see
 * HttpBillingModel): with a = activitySeconds(d),
 *   window:       1 - e^(-lambda a)
 *   perExecution: lambda a
 */
export function httpActiveFraction(
  lambda: number,
  d: number,
  model: HttpBillingModel = "window",
  prices: Prices = PRICES,
): number {
  check("lambda", lambda);
  check("execution seconds", d);
  const a = activitySeconds(d, prices);
  return model === "perExecution" ? lambda * a : -Math.expm1(-lambda * a);
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
    httpBilling: settings.httpBilling ?? "window",
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
  // Back-to-back billed windows on the one instance merge unless every execution pays its own minimum.
  if (s.httpBilling !== "perExecution") billedPerMinute = Math.min(60, billedPerMinute);
  const timerBilled = billedPerMinute * MONTH_MINUTES;
  const timerExecutions = passesPerMinute * MONTH_MINUTES;
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
    functions,
    table,
    blob,
    totalUsd,
    usdPerNodeMonth: totalUsd / nodes,
    totalUsdNoGrant,
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
