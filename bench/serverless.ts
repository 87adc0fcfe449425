/**
 * The serverless section of `npm run bench`: what the control plane costs
 * on Flex Consumption, built from what a run counts.
 *
 * 1. Idle agents: `IDLE_NODES` real agent processes, each serving a
 *    volume, left alone for `IDLE_SECONDS` at the default settings. Counted
 *    from outside: requests to the Functions API and the seconds they were
 *    open (a counting proxy in front of it), Table transactions (counting
 *    proxies in front of the registry's and the liveness table's
 *    endpoints). The sweeper is off meanwhile: its cost is measured in 2.
 *    A report and a desired-state fetch, which an idle agent sends only
 *    every 10 minutes and, serving volumes, when half its SAS's time is
 *    left (every 7.5 minutes at the longest lifetime of 15;
 *    agent/control/report-loop.ts, liveness-loop.ts), are measured one by
 *    one and priced at that pace.
 * 2. The sweeper: one pass over 3, 100, 1,000 and 10,000 simulated nodes
 *    beating at the default settings (test/scale/fleet.ts: real Azurite
 *    tables, the real sweeper, virtual time), its Table transactions and
 *    its time, on the passes that found nothing to do.
 * 3. The event log's retention: a day of hourly prunes over 33 day tables
 *    (retention 30 days), and what a day's first event pays to make its
 *    table, in Table transactions; priced as daily housekeeping.
 * 4. The monthly bill at 3, 100, 1,000 and 10,000 nodes
 *    (bench/cost-model.ts, prices in bench/prices.json), at the Bicep
 *    template's settings: 512 MB instances taking 16 HTTP requests at once,
 *    a sweep pass every `sweepIntervalMs` (eight a minute); judged against
 *    at most $3 a month at 3 nodes (with the free grant) and $0.10 a
 *    node-month at 1,000.
 *
 * Env: PAGEDISK_BENCH_IDLE_SECONDS (default 60), PAGEDISK_BENCH_IDLE_NODES
 * (3), PAGEDISK_BENCH_SCALE (3,100,1000,10000).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiClient } from "../agent/control/api-client.ts";
import { REFRESH_MS as FETCH_EVERY_MS } from "../agent/control/liveness-loop.ts";
import { NodeClient, type ReportBody } from "../agent/control/node-client.ts";
import { REFRESH_MS as REPORT_EVERY_MS } from "../agent/control/report-loop.ts";
import { DEFAULT_SWEEP_POLICY } from "../functions/health/sweep.ts";
import { startLocalControlPlane } from "../functions/local.ts";
import { DAY_MS } from "../functions/registry/event-layout.ts";
import { pruneEvents } from "../functions/registry/event-retention.ts";
import { recordEvent } from "../functions/registry/events.ts";
import { openRegistry } from "../functions/registry/tables.ts";
import { type AgentProcess, startAgent } from "../test/control/agent-process.ts";
import { startAzurite } from "../test/harness/azurite.ts";
import { startFaultProxy } from "../test/harness/fault-proxy.ts";
import { UNBOUND_SAS_LIFETIME_MS } from "../functions/arbiter/desired-state.ts";
import { MAX_REPLICA_SAS_LIFETIME_MS } from "../functions/storage/replica-sas.ts";
import { startFleet } from "../test/scale/fleet.ts";
import { costTable, formatCostTable, formatUsd, type MeasuredCounts } from "./cost-model.ts";
import { ms, percentile, sectionRows, type TextRow } from "./rows.ts";

const IDLE_SECONDS = Number(process.env.PAGEDISK_BENCH_IDLE_SECONDS ?? 60);
const IDLE_NODES = Number(process.env.PAGEDISK_BENCH_IDLE_NODES ?? 3);
const SCALE = (process.env.PAGEDISK_BENCH_SCALE ?? "3,100,1000,10000").split(",").map(Number);
const SECTION = "serverless (Azurite)";
/** Targets of an idle agent, per node-minute. */
const REQUESTS_TARGET = 6;
const EXECUTION_SECONDS_TARGET = 1;
/** Samples of a report and of a fetch. */
const SAMPLES = 20;
/** The bill's targets: a month at 3 nodes (with the free grant), and a node-month at 1,000. */
const SMALL_CLUSTER_NODES = 3;
const SMALL_CLUSTER_USD_TARGET = 3;
const PER_NODE_AT_NODES = 1_000;
const PER_NODE_USD_TARGET = 0.1;
/** Per-instance HTTP concurrency, as bicep/main.bicep sets it (the plan's default at 512 MB is 4). */
const HTTP_PER_INSTANCE_CONCURRENCY = 16;

const { atMost, reported } = sectionRows(SECTION);

export interface ServerlessResult {
  rows: TextRow[];
  /** The bill, as a Markdown table. */
  costs: string;
}

export async function serverlessSection(): Promise<ServerlessResult> {
  const rows: TextRow[] = [];
  const idle = await idleAgents(rows);
  const sweeps = await sweeperScaling(rows);
  const daily = await eventRetention(rows);
  // The schedule (SWEEP_SCHEDULE) runs a pass about every sweepIntervalMs: eight a minute.
  const passesPerMinute = 60_000 / DEFAULT_SWEEP_POLICY.sweepIntervalMs;
  const counts: MeasuredCounts = {
    perNodeMinute: {
      httpExecutions: idle.requestsPerNodeMinute,
      httpExecutionSeconds: idle.secondsPerNodeMinute,
      tableTransactions: idle.tablePerNodeMinute,
      blob: {},
    },
    perSweepPass: {
      seconds: sweeps.map((s) => ({ nodes: s.nodes, seconds: s.ms / 1000 })),
      tableTransactions: sweeps.map((s) => ({ nodes: s.nodes, transactions: s.transactions })),
      // One probe of the (one) pool a pass: Get Container Properties, an "other" operation.
      blob: { other: 1 },
    },
    perDay: { tableTransactions: daily },
  };
  const bill = costTable(counts, {
    instanceMemoryMB: 512,
    httpPerInstanceConcurrency: HTTP_PER_INSTANCE_CONCURRENCY,
    sweepPassesPerMinute: passesPerMinute,
    applyFreeGrant: true,
  });
  for (const b of bill) {
    const at = b.nodes.toLocaleString("en-US");
    const shown = `${formatUsd(b.totalUsd)} / ${formatUsd(b.totalUsdNoGrant)}, ${formatUsd(b.usdPerNodeMonth)} per node`;
    const workload = `cost at ${at} nodes, per month (with / without the free grant)`;
    if (b.nodes === SMALL_CLUSTER_NODES) {
      rows.push(
        atMost(workload, b.totalUsd, shown, `$${SMALL_CLUSTER_USD_TARGET} a month, with the free grant`, SMALL_CLUSTER_USD_TARGET),
      );
    } else if (b.nodes === PER_NODE_AT_NODES) {
      rows.push(
        atMost(
          `cost per node-month at ${at} nodes (with the free grant)`,
          b.usdPerNodeMonth,
          `${formatUsd(b.usdPerNodeMonth)} (${formatUsd(b.totalUsd)} / ${formatUsd(b.totalUsdNoGrant)} a month, with / without the free grant)`,
          `$${PER_NODE_USD_TARGET.toFixed(2)} a node-month`,
          PER_NODE_USD_TARGET,
        ),
      );
    } else {
      rows.push(reported(workload, shown));
    }
  }
  return { rows, costs: formatCostTable(bill) };
}

interface IdleCosts {
  requestsPerNodeMinute: number;
  secondsPerNodeMinute: number;
  tablePerNodeMinute: number;
}

/** 1. Real agents, idle, counted from outside. */
async function idleAgents(rows: TextRow[]): Promise<IdleCosts> {
  const azurite = await startAzurite({ table: true, inMemory: true });
  const registryTx = await startFaultProxy(azurite.tableEndpoint!);
  const livenessTx = await startFaultProxy(azurite.tableEndpoint!);
  const through = (endpoint: string) =>
    azurite.connectionString.replace(/TableEndpoint=[^;]+/, `TableEndpoint=${endpoint}`);
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-bench-idle-"));
  const cp = await startLocalControlPlane({
    connectionString: through(registryTx.blobEndpoint),
    env: { PAGEDISK_LIVENESS_CONNECTION_STRING: through(livenessTx.blobEndpoint) },
    port: 0,
    stateDir: join(dir, "cp"),
    // The sweeper's own cost is measured apart (2.).
    sweepIntervalMs: 3_600_000,
    log: () => {},
  });
  // Counts the agents' API requests and the seconds each was open.
  const api = await startFaultProxy(new URL(cp.apiUrl).origin);
  const agents: AgentProcess[] = [];
  try {
    const admin = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
    await admin.createPool({
      name: "bench",
      container: "bench-disks",
      auth: { kind: "connectionString", connectionString: azurite.connectionString },
    });
    const token = (await admin.createToken()).token;
    for (let i = 0; i < IDLE_NODES; i++) {
      const node = `idle-${i}`;
      const agent = await startAgent(
        ["--control-plane", api.origin, "--state-dir", join(dir, node), "--name", node, "--kernel", "none"],
        { PAGEDISK_JOIN_TOKEN: token },
      );
      agents.push(agent);
      await agent.waitForReport(() => true);
      await admin.createVolume({ name: `vol-${i}`, sizeBytes: 64 * 1024 * 1024 });
      const from = agent.logs.length;
      await admin.attachVolume(`vol-${i}`, node);
      await agent.waitForReport((v) => v.includes(`vol-${i}:1:SERVING`), from);
    }

    // Right after an attach the writer holds a short SAS not bound to its policy (Azure may not
    // apply a new policy for 30 s: functions/arbiter/desired-state.ts) and fetches a bound one
    // when half of it is left, about a minute later: once per attach, not per idle minute. The
    // idle window starts after every agent has made that fetch.
    console.error(`serverless: waiting for the ${IDLE_NODES} agents' first SAS renewal`);
    const settled = api.received() + IDLE_NODES;
    const giveUpAt = performance.now() + 3 * UNBOUND_SAS_LIFETIME_MS;
    while (api.received() < settled && performance.now() < giveUpAt) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    console.error(`serverless: ${IDLE_NODES} idle agents for ${IDLE_SECONDS} s`);
    api.resetCounts();
    registryTx.resetCounts();
    livenessTx.resetCounts();
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
    const minutes = ((performance.now() - started) / 60_000) * IDLE_NODES;
    const measured = {
      requests: api.received() / minutes,
      seconds: api.openSeconds() / minutes,
      table: (registryTx.received() + livenessTx.received()) / minutes,
      beats: livenessTx.received() / minutes,
    };

    // What an idle agent also sends, at its own pace: a report every 10 min, and a fetch when half
    // its SAS's time is left (each idle agent here serves a volume), or every 30 min without one.
    const node = "idle-0";
    const { credential } = JSON.parse(await readFile(join(dir, node, "node.json"), "utf8")) as { credential: string };
    const client = new NodeClient({ apiUrl: cp.apiUrl, node, credential });
    /** One call's time and the Table transactions it made. */
    const one = async (send: () => Promise<unknown>) => {
      registryTx.resetCounts();
      livenessTx.resetCounts();
      const t0 = performance.now();
      await send();
      return { ms: performance.now() - t0, tx: registryTx.received() + livenessTx.received() };
    };
    const desired = await client.desired();
    const body: ReportBody = {
      agentVersion: "bench",
      volumes: desired.attachments.map((a) => ({ volume: a.volume, epoch: a.epoch, state: "SERVING", replicas: [] })),
      events: [],
    };
    const reports = [];
    const fetches = [];
    for (let i = 0; i < SAMPLES; i++) {
      reports.push(await one(() => client.report(body)));
      fetches.push(await one(() => client.desired()));
    }
    const median = (xs: number[]) => percentile(xs, 50);
    const report = { ms: median(reports.map((r) => r.ms)), tx: median(reports.map((r) => r.tx)) };
    const fetched = { ms: median(fetches.map((r) => r.ms)), tx: median(fetches.map((r) => r.tx)) };
    const fetchEveryMs = Math.min(FETCH_EVERY_MS, MAX_REPLICA_SAS_LIFETIME_MS / 2);
    const pace = { reports: 60_000 / REPORT_EVERY_MS, fetches: 60_000 / fetchEveryMs };
    const costs: IdleCosts = {
      requestsPerNodeMinute: measured.requests + pace.reports + pace.fetches,
      secondsPerNodeMinute: measured.seconds + (pace.reports * report.ms + pace.fetches * fetched.ms) / 1000,
      tablePerNodeMinute: measured.table + pace.reports * report.tx + pace.fetches * fetched.tx,
    };
    rows.push(
      atMost(
        "Functions requests per idle node-minute",
        costs.requestsPerNodeMinute,
        `${costs.requestsPerNodeMinute.toFixed(2)} (${measured.requests.toFixed(2)} seen in ${IDLE_SECONDS} s, + a report / 10 min, a fetch / ${fetchEveryMs / 60_000} min)`,
        `${REQUESTS_TARGET}`,
        REQUESTS_TARGET,
        "32.5 (held poll + 2 s heartbeats through the API, before)",
      ),
      atMost(
        "Functions execution-seconds per idle node-minute",
        costs.secondsPerNodeMinute,
        `${costs.secondsPerNodeMinute.toFixed(4)} s`,
        `${EXECUTION_SECONDS_TARGET} s`,
        EXECUTION_SECONDS_TARGET,
        "40 s (before)",
      ),
      reported(
        "Table transactions per idle node-minute",
        `${costs.tablePerNodeMinute.toFixed(1)} (${measured.beats.toFixed(1)} heartbeats)`,
      ),
      reported("a report: time, Table transactions", `${ms(report.ms)}, ${report.tx}`),
      reported("a desired-state fetch: time, Table transactions", `${ms(fetched.ms)}, ${fetched.tx}`),
    );
    return costs;
  } finally {
    await Promise.all(agents.map((a) => a.stop("SIGKILL")));
    await api.close();
    await cp.close();
    await registryTx.close();
    await livenessTx.close();
    await azurite.dispose();
    await rm(dir, { recursive: true, force: true });
  }
}

interface SweepAt {
  nodes: number;
  transactions: number;
  ms: number;
}

/** 2. One quiet pass at each fleet size. */
async function sweeperScaling(rows: TextRow[]): Promise<SweepAt[]> {
  const results: SweepAt[] = [];
  for (const size of SCALE) {
    console.error(`serverless: sweeper over ${size} nodes`);
    const fleet = await startFleet({ nodes: size });
    try {
      await fleet.pass();
      const quiet: SweepAt[] = [];
      for (let i = 0; i < 3; i++) {
        const pass = await fleet.nextPass();
        const { suspect, lost } = pass.report;
        if (suspect.length + lost.length > 0) throw new Error(`a quiet pass over ${size} nodes judged ${[...suspect, ...lost].join(", ")}`);
        quiet.push({ nodes: size, transactions: pass.transactions, ms: pass.ms });
      }
      const at: SweepAt = {
        nodes: size,
        transactions: percentile(quiet.map((q) => q.transactions), 50),
        ms: percentile(quiet.map((q) => q.ms), 50),
      };
      results.push(at);
      const budget = DEFAULT_SWEEP_POLICY.sweepIntervalMs / 5;
      rows.push(
        atMost(
          `sweeper pass over ${size.toLocaleString("en-US")} nodes (Table transactions)`,
          at.ms,
          `${ms(at.ms)} (${at.transactions} tx)`,
          `${budget / 1000} s, a fifth of the interval`,
          budget,
        ),
      );
    } finally {
      await fleet.close();
    }
  }
  return results;
}

/**
 * 3. The event log's housekeeping in a day, in Table transactions: the
 * sweeper's hourly prune (24 a day, one of them dropping the day that left
 * the retention) and the making of the day's table by its first event (as
 * if every day had events).
 */
async function eventRetention(rows: TextRow[]): Promise<number> {
  console.error("serverless: event retention over a day");
  const azurite = await startAzurite({ table: true, inMemory: true });
  const tx = await startFaultProxy(azurite.tableEndpoint!);
  try {
    const registry = await openRegistry(
      azurite.connectionString.replace(/TableEndpoint=[^;]+/, `TableEndpoint=${tx.blobEndpoint}`),
    );
    const retentionDays = 30;
    const start = Date.UTC(2026, 0, 1, 12);
    const days = retentionDays + 3;
    for (let d = 0; d < days; d++)
      await recordEvent(registry, new Date(start + d * DAY_MS), { type: "node-ready", node: "vm", message: `day ${d}` });
    // Half an hour before the last event's day begins: clear what was already past the retention.
    const lastMidnight = Date.UTC(2026, 0, days);
    await pruneEvents(registry, new Date(lastMidnight - 1_800_000), retentionDays);
    tx.resetCounts();
    let dropped = 0;
    for (let h = 0; h < 24; h++)
      dropped += (await pruneEvents(registry, new Date(lastMidnight + h * 3_600_000 + 1_800_000), retentionDays)).length;
    const prune = tx.received();
    if (dropped !== 1) throw new Error(`a day of prunes dropped ${dropped} day tables, not 1`);

    // A day's first event against its second: the difference is the table's making.
    const next = lastMidnight + DAY_MS + 3_600_000;
    const one = async (at: number) => {
      tx.resetCounts();
      await recordEvent(registry, new Date(at), { type: "node-ready", node: "vm", message: "next" });
      return tx.received();
    };
    const first = await one(next);
    const second = await one(next + 1);
    const making = first - second;
    rows.push(
      reported(
        `event retention: Table transactions a day (${retentionDays} days kept)`,
        `${prune + making} (24 hourly prunes: ${prune}, one of them dropping a day's table; the day's table made: ${making})`,
      ),
    );
    return prune + making;
  } finally {
    await tx.close();
    await azurite.dispose();
  }
}
