/**
 * The sweeper: one pass over node health and the volumes that depend on
 * it, run by the timer trigger in Azure and on an interval locally.
 *
 * 1. Read the agents' heartbeats (one scan of the liveness table, which
 *    holds a row per node) and the nodes, and judge them
 *    (liveness-judge.ts): READY, SUSPECT, LOST, or not judged at all while
 *    nothing shows that the heartbeats' path works. Moves are conditional
 *    writes, so two sweepers at once make each move once.
 * 2. A node a beat and a half late or more, short of `lostAfter`, gets a
 *    second look within this pass, at the moment it would be LOST (each
 *    at its own, earliest first): a pass every 7.5 s would otherwise find
 *    a dead node up to 7.5 s late. The wait is billed as execution, and
 *    happens only when a node has gone quiet.
 * 3. Each ATTACHED volume whose owner is LOST (or no longer registered) is
 *    fenced and, with automatic failover, attached elsewhere (arbiter/fence.ts);
 *    FENCING volumes left by an earlier pass are carried on.
 * 4. Attach and detach steps left half-done by a crash (ATTACHING or
 *    DETACHING for longer than any step takes) are rolled back or finished.
 * 5. A DETACHED volume still owed a failover (`status.failoverPending`, set
 *    by fencing and kept until an attach completes) with `failover:
 *    automatic` is placed like a fenced one, including right after step 4
 *    rolled back its interrupted failover attach; with no eligible node it
 *    stays DETACHED and marked, and is reported as waiting.
 * 6. Each pool is probed and its health judged (pool-health.ts), before
 *    the volumes, whose repair (repair.ts) reads it: every other ATTACHED
 *    or DETACHED volume gets a repair pass, which reads its writer's
 *    report from the node rows listed in 1. Before any of 3 to 6 moves a
 *    volume, the owner index is brought in line with the volumes as
 *    listed (registry/owners.ts).
 * 7. Pool releases are advanced last (replacement.ts): the moves they
 *    start are carried on by the repair of later passes.
 * 8. The pass is recorded (registry/sweeper-state.ts), the agents' SAS
 *    policy is rolled forward when it nears its expiry, and once an hour
 *    the event tables past their retention are dropped.
 *
 * What a pass reads over a healthy cluster: its own state, the liveness
 * table and the nodes (a page per 1,000 nodes each), the pools and the
 * window of recent failure events, one probe per pool, the volumes and the
 * owner index (a page per 1,000 each), and the pools again for releases.
 * It writes its state and nothing else, so a second pass right after any
 * pass finds nothing to do.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { rollBackAttach } from "../arbiter/attach.ts";
import { detachVolume } from "../arbiter/detach.ts";
import {
  type FenceOutcome,
  finishFencing,
  markFencing,
  resumeFailover,
} from "../arbiter/fence.ts";
import type { ControlPlane } from "../control-plane.ts";
import { note } from "../lifecycle/note.ts";
import { pruneEvents } from "../registry/event-retention.ts";
import { reconcileOwners } from "../registry/owners.ts";
import { ensureAgentPolicy, lastBeatOf, scanLiveness } from "../registry/liveness.ts";
import { nodeStates } from "../registry/node-states.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import type { PoolRecord } from "../registry/pools.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import type { Read } from "../registry/rows.ts";
import {
  NO_SWEEPER_STATE,
  readSweeperState,
  type SweeperState,
  writeSweeperState,
} from "../registry/sweeper-state.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import { replicasPerPool } from "../lifecycle/placement.ts";
import {
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  type Judgement,
  judgeLiveness,
  type LivenessPolicy,
  type NodeBeat,
  type NodeJudgement,
  type PathState,
} from "./liveness-judge.ts";
import { judgePools } from "./pool-health.ts";
import { repairVolume } from "./repair.ts";
import { DEFAULT_REPAIR_POLICY, type RepairPolicy } from "./repair-policy.ts";
import { advanceReleases } from "./replacement.ts";

/** How nodes are judged, and the volume side of a pass. */
export interface SweepPolicy extends LivenessPolicy {
  /** An attach or detach step unfinished for this long was interrupted; default one minute. */
  stuckAfterMs?: number;
  /** Pool health and repair thresholds; default `DEFAULT_REPAIR_POLICY`. */
  repair?: RepairPolicy;
}

/**
 * Agents beat every 2 s; two missed beats make a node suspect, four lost.
 * With passes 7 or 8 s apart (SWEEP_SCHEDULE; 7.5 s locally) and the
 * second look at a watched node's deadline, a dead node is LOST 8 to 11 s
 * after its last beat (just under 3 s silent at one pass, unwatched, and 8
 * s to the next), and its volumes serve on another node within about 3 s
 * more (the new owner hears of them at its next beat): inside the 15 s
 * promised. The interval is what the timer costs (bench/cost-model.ts).
 */
export const DEFAULT_SWEEP_POLICY: SweepPolicy = {
  heartbeatIntervalMs: DEFAULT_HEARTBEAT_INTERVAL_MS,
  suspectAfterMs: 4_000,
  lostAfterMs: 8_000,
  sweepIntervalMs: 7_500,
};
/**
 * The timer trigger's schedule: eight passes a minute, every 7.5 s on
 * average (NCRONTAB, seconds first). Each pass is billed at least a second
 * of instance memory (Flex Consumption's minimum), so this schedule is most
 * of what an idle cluster costs: bench/cost-model.ts prices it.
 */
export const SWEEP_SCHEDULE = "0,8,15,23,30,38,45,53 * * * * *";
const DEFAULT_STUCK_AFTER_MS = 60_000;
/** Event tables past their retention are looked for this often. */
const PRUNE_EVERY_MS = 3_600_000;

export interface SweepOptions {
  /** Waits on the sweeper's clock (the second look at suspects); tests step a fake one. */
  wait?: (ms: number) => Promise<void>;
}

/** What one pass did, by node and volume name. */
export interface SweepReport {
  suspect: string[];
  lost: string[];
  fenced: string[];
  failedOver: string[];
  /** Fenced volumes with manual failover, now DETACHED. */
  detached: string[];
  /** Fenced volumes (FENCING, or DETACHED and still owed a failover) with no eligible node yet. */
  waiting: string[];
  /** Interrupted attaches rolled back and detaches finished. */
  recovered: string[];
  /** Nodes back to READY. */
  ready: string[];
  /** Why nodes were not judged, or silence was counted from this pass; undefined when all was well. */
  path?: string;
}

/** One sweep. Idempotent: a second pass right after finds nothing to do. */
export async function sweep(
  cp: ControlPlane,
  policy: SweepPolicy = DEFAULT_SWEEP_POLICY,
  options: SweepOptions = {},
): Promise<SweepReport> {
  const report: SweepReport = {
    suspect: [],
    lost: [],
    fenced: [],
    failedOver: [],
    detached: [],
    waiting: [],
    recovered: [],
    ready: [],
  };
  const now = cp.now().getTime();
  const saved = await readSweeperState(cp.registry);
  const state = saved?.value ?? NO_SWEEPER_STATE;
  // The storage service judges the policy's expiry by its own clock: the real one here too.
  const policyExpiresAt = await guarded(cp, state.policyExpiresAt, () =>
    ensureAgentPolicy(cp.registry.liveness, Date.now(), state.policyExpiresAt),
  );

  const judged = await judgeNodes(cp, pathOf(state), now, policy);
  if (judged.pathNote !== undefined) report.path = judged.pathNote;
  const byName = await moveNodes(cp, judged, report);

  // The second look: at each watched node's deadline, earliest first, read the heartbeats again
  // and judge those nodes again. Everyone's beats are evidence of the path; only they move.
  let watched = judged.nodes.filter((j) => j.deadlineMs !== undefined);
  let path = judged.path;
  while (watched.length > 0) {
    const until = Math.min(...watched.map((j) => j.deadlineMs!));
    await (options.wait ?? sleep)(Math.max(0, until - cp.now().getTime()));
    const names = new Set(watched.map((j) => j.node));
    const again = await judgeNodes(cp, path, cp.now().getTime(), policy);
    path = again.path;
    const suspects = { ...again, nodes: again.nodes.filter((j) => names.has(j.node)) };
    for (const [name, node] of await moveNodes(cp, suspects, report)) byName.set(name, node);
    // Still short of their deadline (a later one, or the path went down meanwhile): look again.
    watched = suspects.nodes.filter((j) => j.deadlineMs !== undefined && j.deadlineMs > until);
  }

  const repairPolicy = policy.repair ?? DEFAULT_REPAIR_POLICY;
  const poolsNow = await guarded(cp, new Map<string, PoolRecord>(), () =>
    judgePools(cp, repairPolicy),
  );

  const all = await volumes(cp.registry).list();
  // The owner index (registry/owners.ts), against the volumes as just listed, before anything moves.
  let ownersIndexedAt = state.ownersIndexedAt;
  await guarded(cp, undefined, async () => {
    await reconcileOwners(cp.registry, all);
    ownersIndexedAt ??= new Date(now).toISOString();
  });
  const repair = {
    nodes: byName,
    pools: poolsNow,
    load: replicasPerPool(all.map((r) => r.value)),
    policy: repairPolicy,
  };
  const load = new Map<string, number>();
  for (const { value: v } of all) {
    const owner = v.status.ownerNode;
    if (owner !== null) load.set(owner, (load.get(owner) ?? 0) + 1);
  }
  const candidates = [...byName.values()];
  const stuckAfter = policy.stuckAfterMs ?? DEFAULT_STUCK_AFTER_MS;

  for (const read of all) {
    const v = read.value;
    const owner = v.status.ownerNode === null ? undefined : byName.get(v.status.ownerNode);
    const ownerGone = v.status.ownerNode !== null && (!owner || owner.state === "LOST");
    const stuck = now - Date.parse(v.updatedAt) >= stuckAfter;
    await guarded(cp, undefined, async () => {
      if (v.status.state === "ATTACHED" && ownerGone) {
        const fencing = await markFencing(cp, read);
        report.fenced.push(v.name);
        tally(
          report,
          v.name,
          await finishFencing(cp, fencing, candidates, load),
          fencing.value,
          load,
        );
      } else if (v.status.state === "FENCING") {
        tally(report, v.name, await finishFencing(cp, read, candidates, load), v, load);
      } else if (v.status.state === "ATTACHING" && stuck) {
        const rolledBack = await rollBackAttach(cp, read, v.leaseId!);
        if (!rolledBack) return;
        report.recovered.push(v.name);
        const owner = v.status.ownerNode;
        if (owner !== null) load.set(owner, (load.get(owner) ?? 1) - 1);
        if (owedFailover(rolledBack.value)) {
          const outcome = await resumeFailover(cp, rolledBack, candidates, load);
          tally(report, v.name, outcome, rolledBack.value, load);
        }
      } else if (owedFailover(v)) {
        tally(report, v.name, await resumeFailover(cp, read, candidates, load), v, load);
      } else if (v.status.state === "DETACHING" && stuck) {
        // The detach that left it had its chance to wait for the owner; a sweep does not wait.
        await detachVolume(cp, v.name, { skipDrain: "a stuck detach finished by the sweeper" });
        report.recovered.push(v.name);
      } else if (poolsNow.size > 0) {
        await repairVolume(cp, read, repair);
      }
    });
  }
  // Pool releases (replacement.ts) last: the moves they start are carried on by later passes.
  await guarded(cp, undefined, async () => void (await advanceReleases(cp)));
  let eventsPrunedAt = state.eventsPrunedAt;
  if (eventsPrunedAt === null || now - Date.parse(eventsPrunedAt) >= PRUNE_EVERY_MS) {
    await guarded(cp, undefined, async () => {
      await pruneEvents(cp.registry, new Date(now), cp.eventRetentionDays);
      eventsPrunedAt = new Date(now).toISOString();
    });
  }
  // Another sweeper that recorded its pass first conflicts here: its record stands.
  await guarded(cp, undefined, () =>
    writeSweeperState(
      cp.registry,
      {
        lastPassAt: new Date(now).toISOString(),
        pathSince: judged.path.pathSince === null ? null : new Date(judged.path.pathSince).toISOString(),
        policyExpiresAt,
        eventsPrunedAt,
        ownersIndexedAt,
      },
      saved?.etag,
    ),
  );
  return report;
}

/** DETACHED, marked by fencing and not yet placed, and the sweeper may still place it. */
function owedFailover(v: VolumeRecord): boolean {
  return (
    v.status.state === "DETACHED" &&
    v.status.failoverPending === true &&
    v.spec.failover === "automatic"
  );
}

/** Read every node and its heartbeats (a scan each), and judge them. */
async function judgeNodes(
  cp: ControlPlane,
  path: PathState,
  nowMs: number,
  policy: LivenessPolicy,
): Promise<Judgement & { reads: Map<string, Read<NodeRecord>> }> {
  const [rows, nodeReads] = await Promise.all([
    scanLiveness(cp.registry.liveness),
    nodes(cp.registry).list(),
  ]);
  const rowByKey = new Map(rows.map((r) => [r.key, r]));
  const beats = nodeReads.map(({ value: n }): NodeBeat => {
    const row = n.livenessKey === undefined ? undefined : rowByKey.get(n.livenessKey);
    return {
      node: n.name,
      state: n.state,
      lastBeatMs: row === undefined ? undefined : lastBeatOf(row, nowMs),
      sinceMs: Date.parse(n.joinedAt),
      gapMs: row?.gapMs,
    };
  });
  const judged = judgeLiveness(beats, path, nowMs, policy);
  return { ...judged, reads: new Map(nodeReads.map((r) => [r.value.name, r])) };
}

/** Move every node to its verdict; returns each node as it now is. */
async function moveNodes(
  cp: ControlPlane,
  judged: Judgement & { reads: Map<string, Read<NodeRecord>> },
  report: SweepReport,
): Promise<Map<string, NodeRecord>> {
  const byName = new Map<string, NodeRecord>();
  for (const j of judged.nodes) {
    const read = judged.reads.get(j.node)!;
    byName.set(j.node, await guarded(cp, read.value, () => moveNode(cp, read, j, report)));
  }
  return byName;
}

function pathOf(state: SweeperState): PathState {
  return {
    lastPassAt: state.lastPassAt === null ? null : Date.parse(state.lastPassAt),
    pathSince: state.pathSince === null ? null : Date.parse(state.pathSince),
  };
}

/**
 * Move a node to its verdict (LOST by way of SUSPECT, as the node state
 * machine says) by conditional writes: a report landing meanwhile wins, and
 * the node is judged again next pass. Returns the node as it now is.
 */
async function moveNode(
  cp: ControlPlane,
  read: Read<NodeRecord>,
  judged: NodeJudgement,
  report: SweepReport,
): Promise<NodeRecord> {
  let { value: node, etag } = read;
  const target = judged.verdict;
  if (target === undefined || target === node.state) return node;
  const steps = node.state === "READY" && target === "LOST" ? (["SUSPECT", "LOST"] as const) : [target];
  const silent = Math.round(judged.silenceMs / 1000);
  for (const state of steps) {
    nodeStates.check(node.state, state);
    const from = node.state;
    const next: NodeRecord = { ...node, state };
    etag = await nodes(cp.registry).replace(next, etag);
    node = next;
    if (state === "READY") {
      report.ready.push(node.name);
      await note(cp, {
        type: "node-ready",
        node: node.name,
        message: `node ${node.name} is READY again (was ${from})`,
        data: { from },
      });
      continue;
    }
    (state === "LOST" ? report.lost : report.suspect).push(node.name);
    await note(cp, {
      type: state === "LOST" ? "node-lost" : "node-suspect",
      node: node.name,
      message: `node ${node.name} is ${state}: no heartbeat for ${silent} s`,
      data: { silentMs: judged.silenceMs },
    });
  }
  return node;
}

function tally(
  report: SweepReport,
  volume: string,
  outcome: FenceOutcome,
  before: VolumeRecord,
  load: Map<string, number>,
): void {
  if (outcome.kind === "waiting") return void report.waiting.push(volume);
  (outcome.kind === "failed-over" ? report.failedOver : report.detached).push(volume);
  // The next volume placed in this pass must see this one moved.
  const from = before.status.ownerNode;
  if (from !== null) load.set(from, (load.get(from) ?? 1) - 1);
  if (outcome.kind === "failed-over") load.set(outcome.node, (load.get(outcome.node) ?? 0) + 1);
}

/**
 * Run one step of the pass. A conflict means a report or a request got
 * there first: leave it to the next pass. Anything else is reported and
 * the pass goes on with the other nodes and volumes.
 */
async function guarded<T>(cp: ControlPlane, fallback: T, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (!isRegistryError(err, "Conflict") && !isRegistryError(err, "Exists")) cp.report(err);
    return fallback;
  }
}
