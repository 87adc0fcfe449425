/**
 * The sweeper: one pass over node health and the volumes that depend on
 * it, run by the timer trigger in Azure and on an interval locally.
 *
 * 1. Each node silent for `suspectAfter` becomes SUSPECT, for `lostAfter`
 *    LOST (through SUSPECT, as the node state machine says), by
 *    conditional writes: a heartbeat landing meanwhile wins, and the node
 *    is judged again next pass.
 * 2. Each ATTACHED volume whose owner is LOST (or no longer registered) is
 *    fenced and, with automatic failover, attached elsewhere (arbiter/fence.ts);
 *    FENCING volumes left by an earlier pass are carried on.
 * 3. Attach and detach steps left half-done by a crash (ATTACHING or
 *    DETACHING for longer than any step takes) are rolled back or finished.
 * 4. A DETACHED volume still owed a failover (`status.failoverPending`, set
 *    by fencing and kept until an attach completes) with `failover:
 *    automatic` is placed like a fenced one, including right after step 3
 *    rolled back its interrupted failover attach; with no eligible node it
 *    stays DETACHED and marked, and is reported as waiting.
 * 5. Each pool is probed and its health judged (pool-health.ts), before
 *    the volumes, whose repair (repair.ts) reads it: every other ATTACHED
 *    or DETACHED volume gets a repair pass, which reads its writer's
 *    report from the node rows listed in 1.
 * 6. Pool releases are advanced last (replacement.ts): the moves they
 *    start are carried on by the repair of later passes.
 *
 * What a pass reads: the nodes; the pools and the window of recent
 * failure events (`suspectWindowMs`, one range query: reported-failures.ts);
 * one probe per pool (Get Container Properties, `probeTimeoutMs` at most);
 * the volumes; and for the releases the pools again, with the volumes again
 * only when a pool has a release to advance (and once more for each move
 * it starts: repair.ts `moveReplica`). That is five queries and the
 * probes over a cluster with no release under way. Volumes acted on read
 * more (fencing reads the pool of each replica, a resumed failover its
 * latest `volume-fenced` event), and the repair calls a pool only for a
 * replica it leases, makes or deletes. Writes happen only where something
 * changes, so a pass over a healthy cluster writes nothing and a second
 * pass right after any pass finds nothing to do.
 */
import type { NodeState } from "../../contract/node.ts";
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
import { nodeStates } from "../registry/node-states.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import type { PoolRecord } from "../registry/pools.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import type { Read } from "../registry/rows.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import { replicasPerPool } from "../lifecycle/placement.ts";
import { judgePools } from "./pool-health.ts";
import { repairVolume } from "./repair.ts";
import { DEFAULT_REPAIR_POLICY, type RepairPolicy } from "./repair-policy.ts";
import { advanceReleases } from "./replacement.ts";

/** How long a node may stay silent before it is SUSPECT, then LOST. */
export interface SweepPolicy {
  suspectAfterMs: number;
  lostAfterMs: number;
  /** An attach or detach step unfinished for this long was interrupted; default one minute. */
  stuckAfterMs?: number;
  /** Pool health and repair thresholds; default `DEFAULT_REPAIR_POLICY`. */
  repair?: RepairPolicy;
}

/**
 * Agents heartbeat every 2 s: three missed beats make a node suspect, five
 * lost. With a sweep every 2 s (SWEEP_SCHEDULE, LOCAL_SWEEP_INTERVAL_MS) a
 * dead node's volumes fail over within 12 s of its last heartbeat, plus the
 * time the failover itself takes: inside the 15 s promised.
 */
export const DEFAULT_SWEEP_POLICY: SweepPolicy = { suspectAfterMs: 6_000, lostAfterMs: 10_000 };
const DEFAULT_STUCK_AFTER_MS = 60_000;

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
}

/** One sweep. Idempotent: a second pass right after finds nothing to do. */
export async function sweep(
  cp: ControlPlane,
  policy: SweepPolicy = DEFAULT_SWEEP_POLICY,
): Promise<SweepReport> {
  const report: SweepReport = {
    suspect: [],
    lost: [],
    fenced: [],
    failedOver: [],
    detached: [],
    waiting: [],
    recovered: [],
  };
  const now = cp.now().getTime();
  const byName = new Map<string, NodeRecord>();
  for (const read of await nodes(cp.registry).list()) {
    byName.set(
      read.value.name,
      await guarded(cp, read.value, () => judgeNode(cp, read, now, policy, report)),
    );
  }

  const repairPolicy = policy.repair ?? DEFAULT_REPAIR_POLICY;
  const poolsNow = await guarded(cp, new Map<string, PoolRecord>(), () =>
    judgePools(cp, repairPolicy),
  );

  const all = await volumes(cp.registry).list();
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

/** Move a silent node toward LOST; returns the node as it now is. */
async function judgeNode(
  cp: ControlPlane,
  read: Read<NodeRecord>,
  now: number,
  policy: SweepPolicy,
  report: SweepReport,
): Promise<NodeRecord> {
  let { value: node, etag } = read;
  const silentMs = now - Date.parse(node.lastHeartbeatAt ?? node.joinedAt);
  const target: NodeState =
    silentMs >= policy.lostAfterMs
      ? "LOST"
      : silentMs >= policy.suspectAfterMs && node.state === "READY"
        ? "SUSPECT"
        : node.state;
  const steps: NodeState[] =
    target === node.state
      ? []
      : node.state === "READY" && target === "LOST"
        ? ["SUSPECT", "LOST"]
        : [target];
  for (const state of steps) {
    nodeStates.check(node.state, state);
    const next: NodeRecord = { ...node, state };
    etag = await nodes(cp.registry).replace(next, etag);
    node = next;
    (state === "LOST" ? report.lost : report.suspect).push(node.name);
    await note(cp, {
      type: state === "LOST" ? "node-lost" : "node-suspect",
      node: node.name,
      message: `node ${node.name} is ${state}: no heartbeat for ${Math.round(silentMs / 1000)} s`,
      data: { silentMs },
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
 * Run one step of the pass. A conflict means a heartbeat or a request got
 * there first: leave it to the next pass. Anything else is reported and
 * the pass goes on with the other nodes and volumes.
 */
async function guarded<T>(cp: ControlPlane, fallback: T, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (!isRegistryError(err, "Conflict")) cp.report(err);
    return fallback;
  }
}
