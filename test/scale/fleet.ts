/**
 * A simulated fleet for scale runs: thousands of nodes registered through
 * the control plane's own code, each beating as its agent does (a MERGE of
 * its liveness row through its own SAS, `agent/control/liveness-beat.ts`),
 * against real Azurite tables; and the real sweeper judging them.
 *
 * Time is virtual: a round of beats is one heartbeat interval of the
 * sweeper's clock, however long the emulator takes to take 10,000 writes.
 * Beats claim that clock (`at`), which starts well ahead of the real one so
 * that the claim is what counts (registry/liveness.ts `lastBeatOf`). This
 * 2-core machine cannot carry the 5,000 writes/s of 10,000 agents in real
 * time; an Azure account's target is 20,000/s.
 *
 * The sweeper's Table requests go through a counting proxy; the beats go
 * straight to Azurite, as agents' do not pass through the control plane.
 */
import { beat } from "../../agent/control/liveness-beat.ts";
import { controlPlane } from "../../functions/control-plane.ts";
import { DEFAULT_SWEEP_POLICY, type SweepPolicy, type SweepReport, sweep } from "../../functions/health/sweep.ts";
import { createLivenessRow, livenessRowUrl, newLivenessKey } from "../../functions/registry/liveness.ts";
import { nodes } from "../../functions/registry/nodes.ts";
import { openRegistry, type Registry } from "../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";

export interface FleetOptions {
  nodes: number;
  policy?: SweepPolicy;
  /** Beats in flight at once. */
  concurrency?: number;
}

export interface PassResult {
  report: SweepReport;
  /** Table requests the pass sent. */
  transactions: number;
  /** Real time the pass took. */
  ms: number;
  /** The sweeper's (virtual) clock when the pass ran. */
  at: number;
}

export interface Fleet {
  readonly names: readonly string[];
  readonly registry: Registry;
  /** The sweeper's clock, ms. */
  now(): number;
  /** One heartbeat interval: the clock moves, every node not `dead` beats. */
  round(): Promise<void>;
  /** These nodes stop beating from now on. */
  kill(...names: string[]): void;
  /** One sweep pass on the virtual clock; its second look waits on that clock too. */
  pass(): Promise<PassResult>;
  /** Beat round by round until a sweep interval (the policy's) has gone by, then pass. */
  nextPass(): Promise<PassResult>;
  close(): Promise<void>;
}

/** Register `nodes` nodes (as join does: a record with a liveness key, and its row) and beat once. */
export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const policy = opts.policy ?? DEFAULT_SWEEP_POLICY;
  const concurrency = opts.concurrency ?? 64;
  const azurite: Azurite = await startAzurite({ table: true, inMemory: true });
  const proxy: FaultProxy = await startFaultProxy(azurite.tableEndpoint!);
  const viaProxy = azurite.connectionString.replace(/TableEndpoint=[^;]+/, `TableEndpoint=${proxy.blobEndpoint}`);
  // The sweeper's registry counts at the proxy; the fleet's beats use the direct endpoint.
  const registry = await openRegistry(viaProxy);
  const direct = await openRegistry(azurite.connectionString);
  let clock = Date.now() + 600_000;
  const names = Array.from({ length: opts.nodes }, (_, i) => `n-${String(i).padStart(5, "0")}`);
  const urls = new Map<string, string>();
  const dead = new Set<string>();

  await inParallel(names, concurrency, async (name) => {
    const key = newLivenessKey();
    await nodes(direct).insert({
      name,
      state: "READY",
      cordoned: false,
      agentVersion: "scale",
      facts: {},
      volumes: [],
      credentialSha256: "0".repeat(64),
      livenessKey: key,
      joinedAt: new Date(clock).toISOString(),
      lastReportAt: null,
    });
    await createLivenessRow(direct.liveness, key);
    urls.set(name, livenessRowUrl(direct.liveness, key));
  });

  const round = async () => {
    clock += policy.heartbeatIntervalMs;
    const at = new Date(clock).toISOString();
    await inParallel(
      names.filter((n) => !dead.has(n)),
      concurrency,
      async (name) => {
        const outcome = await beat(urls.get(name)!, "*", { at }, 10_000);
        if (outcome.kind !== "landed") throw new Error(`${name}'s beat: ${JSON.stringify(outcome)}`);
      },
    );
  };
  await round();

  const pass = async (): Promise<PassResult> => {
    const at = clock;
    const cp = controlPlane({
      registry,
      now: () => new Date(clock),
      report: (err) => {
        throw err;
      },
    });
    proxy.resetCounts();
    const started = performance.now();
    const report = await sweep(cp, policy, {
      // The second look moves the virtual clock as a round would, beats included.
      wait: async (ms) => {
        const target = clock + ms;
        while (clock < target) await round();
      },
    });
    return { report, transactions: proxy.received(), ms: performance.now() - started, at };
  };

  return {
    names,
    registry,
    now: () => clock,
    round,
    kill(...gone) {
      for (const name of gone) dead.add(name);
    },
    pass,
    async nextPass() {
      const due = clock + policy.sweepIntervalMs;
      while (clock < due) await round();
      return pass();
    },
    async close() {
      await proxy.close();
      await azurite.dispose();
    },
  };
}

async function inParallel<T>(items: readonly T[], width: number, run: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await run(items[next++]!);
    }),
  );
}
