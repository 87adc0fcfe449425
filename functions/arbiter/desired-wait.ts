/**
 * Long polling of the desired state: an agent that has applied generation
 * `after` asks to be answered only once its node's generation differs, or
 * after `waitMs`, whichever comes first. A bump made by this process wakes
 * the request at once (desired-changes.ts); one made by another Functions
 * instance is found by re-reading the node row every `recheckMs`.
 *
 * Bumps follow the volume writes they announce, so the desired state read
 * after the wait is at least as new as the generation it is answered with:
 * an agent may see a change before its bump, never a bump before its change.
 */
import type { ControlPlane } from "../control-plane.ts";
import { generationOf, type NodeRecord } from "../registry/nodes.ts";
import type { Read } from "../registry/rows.ts";
import { desiredChanges, watchNode } from "./desired-changes.ts";

/** How often a held request re-reads its node: the longest a bump made elsewhere goes unseen. */
export const DESIRED_RECHECK_MS = 5_000;

export interface DesiredWait {
  /** The generation the agent has; undefined answers at once. */
  after: number | undefined;
  /** Longest hold; 0 answers at once. */
  waitMs: number;
  /** Aborted when the client goes away: the wait ends and lets go of its timers and listeners. */
  signal: AbortSignal;
  recheckMs?: number;
}

/** The node as it is when the wait ends: changed, timed out, or the client gone. */
export async function awaitDesiredChange(
  cp: ControlPlane,
  read: Read<NodeRecord>,
  wait: DesiredWait,
): Promise<NodeRecord> {
  const { after, waitMs, signal } = wait;
  let node = read.value;
  if (after === undefined || waitMs === 0 || generationOf(node) !== after || signal.aborted)
    return node;

  // A node removed meanwhile is answered as last seen; its credential no longer works anyway.
  const changed = await watchNode(
    cp,
    desiredChanges(cp.registry),
    node.name,
    { timeoutMs: waitMs, recheckMs: wait.recheckMs ?? DESIRED_RECHECK_MS, signal },
    (fresh) => {
      if (fresh && generationOf(fresh) === after) {
        node = fresh;
        return undefined;
      }
      return fresh ?? node;
    },
  );
  return changed ?? node;
}
