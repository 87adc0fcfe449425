/**
 * A detach's wait for the volume's owner to let go of it before its leases
 * are dropped: the agent, sent by the ring of its generation bump, drains
 * the export (every request in flight finishes on every replica), flushes
 * and closes it, and says so in a report at once (`appliedGeneration` at
 * least the bumped one, the volume no longer SERVING or DEGRADED). Without the wait,
 * a write in flight at the moment of the lease drop reaches some replicas
 * and not others, which costs a full copy (replicas-diverged).
 *
 * Not waited for: an owner that is not READY (its heartbeats have stopped;
 * fencing is what is left), one that has never said which generation it
 * applied (an older agent), a bump that failed. This is an operator's
 * request that waits, billed as it runs, never an agent's steady path. The wait ends at
 * `cp.detachDrainMs` whatever happens, and the detach goes on: an agent
 * that does not answer must not keep a volume from being detached.
 *
 * Woken by reports this process records (report-watch.ts); one recorded
 * by another Functions instance is found by re-reading the node row every
 * `DRAIN_RECHECK_MS`.
 */
import type { ControlPlane } from "../control-plane.ts";
import type { NodeRecord } from "../registry/nodes.ts";
import { reportsRecorded, watchNode } from "./report-watch.ts";

/** How often a waiting detach re-reads the owner's row. */
export const DRAIN_RECHECK_MS = 500;

/** How the wait ended: the outcome recorded with the `volume-detached` event. */
export type DrainOutcome =
  | { drained: true; waitedMs: number }
  | { drained: false; reason: string; waitedMs: number };

/** States in which the owner still writes the volume. */
const WRITING = new Set(["SERVING", "DEGRADED"]);

/**
 * Wait until `owner` has applied `generation` (the bump that took the
 * volume away from it) and no longer serves `volume`, or until the
 * deadline. `generation` undefined (the bump failed or the node is gone)
 * returns at once.
 */
export async function awaitDrain(
  cp: ControlPlane,
  owner: string,
  volume: string,
  generation: number | undefined,
): Promise<DrainOutcome> {
  const started = Date.now();
  const outcome = (reason?: string): DrainOutcome =>
    reason === undefined
      ? { drained: true, waitedMs: Date.now() - started }
      : { drained: false, reason, waitedMs: Date.now() - started };
  if (generation === undefined) return outcome("the owner's desired state could not be changed");
  const verdict = await watchNode(
    cp,
    reportsRecorded(cp.registry),
    owner,
    { timeoutMs: cp.detachDrainMs, recheckMs: DRAIN_RECHECK_MS },
    (node) => {
      const state = node ? drainState(node, volume, generation) : `node ${owner} is no longer registered`;
      return state === "waiting" ? undefined : state;
    },
  );
  if (verdict === "drained") return outcome();
  return outcome(verdict ?? `node ${owner} did not confirm the drain within ${cp.detachDrainMs / 1000} s`);
}

/**
 * Where the owner stands on the drain of `volume` ordered by `generation`:
 * drained, still to wait for, or why waiting is pointless.
 */
export function drainState(node: NodeRecord, volume: string, generation: number): "drained" | "waiting" | string {
  if (node.state !== "READY") return `node ${node.name} is ${node.state}`;
  if (node.appliedGeneration === undefined) {
    return `node ${node.name}'s agent does not report the generation it applied`;
  }
  if (node.appliedGeneration < generation) return "waiting";
  const report = node.volumes.find((r) => r.volume === volume);
  return report !== undefined && WRITING.has(report.state) ? "waiting" : "drained";
}
