/**
 * Judging nodes by their heartbeats, and only against evidence that the
 * path those heartbeats travel was working. Pure: the sweeper reads the
 * liveness rows and its own state, this decides.
 *
 * A node's silence is counted from its last beat, but never from before
 * the moment since which the path has been seen working (`pathSince`):
 *
 * - No beat from anyone for `pathStaleMs`: the path (the Table endpoint,
 *   the agents' network, their SAS) is down, not every node at once.
 *   Nobody is judged until beats flow again, and silence counts from then.
 * - Most of the nodes that beat since the last pass say their previous
 *   beat was long ago (`gap`): an outage ended between two passes. Silence
 *   counts from now.
 * - The sweeper itself did not run for a while (its first pass, a deploy,
 *   a control plane outage): it has not watched the path, so silence
 *   counts from now.
 *
 * A node whose agent has died is judged LOST `lostAfterMs` after its last
 * beat once the path is known to work: a control plane outage, or a
 * storage outage seen by every agent, fences nobody.
 */
import type { NodeState } from "../../contract/node.ts";

export interface LivenessPolicy {
  /** How often agents beat. */
  heartbeatIntervalMs: number;
  suspectAfterMs: number;
  lostAfterMs: number;
  /** How often the sweeper runs; a longer gap between two passes means it was not watching. */
  sweepIntervalMs: number;
}

/** Agents beat every 2 s, so that a desired-state change reaches them within 2 s. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 2_000;

/** What the sweeper keeps between passes about the path. */
export interface PathState {
  /** When the last pass ran (the judge's clock). */
  lastPassAt: number | null;
  /** Since when the path is known to work; null while it is down. */
  pathSince: number | null;
}

/** One node's evidence. */
export interface NodeBeat {
  node: string;
  state: NodeState;
  /** Its last beat; undefined when it has no liveness row (then `since` counts). */
  lastBeatMs: number | undefined;
  /** When it joined: silence is never counted from before. */
  sinceMs: number;
  /** Milliseconds between its last two beats, as the agent measured them. */
  gapMs?: number | undefined;
}

export type Verdict = "READY" | "SUSPECT" | "LOST";

export interface NodeJudgement {
  node: string;
  silenceMs: number;
  /** What the node should be now; undefined when it cannot be judged (path down). */
  verdict: Verdict | undefined;
  /**
   * Silent for a beat and a half or more, and due to be LOST before the
   * next pass: when, for a second look then rather than at the next pass.
   */
  deadlineMs?: number;
}

export interface Judgement {
  path: PathState;
  /** Why the path's evidence was reset or is missing; undefined when all is well. */
  pathNote: string | undefined;
  nodes: NodeJudgement[];
}

/**
 * Silence from which a node is watched: one beat late and a half. Below
 * it, every live node would be (a beat is up to an interval old); above
 * suspectAfter, a pass 8 s after the last could find a dead node up to 4 s
 * after it was due.
 */
export function watchAfterMs(policy: LivenessPolicy): number {
  return Math.min(policy.suspectAfterMs, 1.5 * policy.heartbeatIntervalMs);
}

/** The share of recent beaters reporting a long gap that means the path, not the nodes, was out. */
const OUTAGE_SHARE = 0.5;

export function judgeLiveness(
  beats: readonly NodeBeat[],
  previous: PathState,
  nowMs: number,
  policy: LivenessPolicy,
): Judgement {
  const tick = policy.heartbeatIntervalMs;
  const staleMs = 3 * tick;
  const newest = Math.max(Number.NEGATIVE_INFINITY, ...beats.map((b) => b.lastBeatMs ?? Number.NEGATIVE_INFINITY));
  const lastPass = previous.lastPassAt;
  let pathSince = previous.pathSince;
  let pathNote: string | undefined;

  if (nowMs - newest > staleMs) {
    pathSince = null;
    pathNote =
      newest === Number.NEGATIVE_INFINITY
        ? "no node has ever beaten"
        : `no heartbeat from any node for ${Math.round((nowMs - newest) / 1000)} s: the path is down, nobody is judged`;
  } else if (lastPass === null || nowMs - lastPass > 3 * policy.sweepIntervalMs) {
    pathSince = nowMs;
    pathNote =
      lastPass === null
        ? "first pass: silence counts from now"
        : `no pass for ${Math.round((nowMs - lastPass) / 1000)} s: silence counts from now`;
  } else if (pathSince === null) {
    pathSince = nowMs;
    pathNote = "heartbeats flow again: silence counts from now";
  } else {
    const recent = beats.filter((b) => b.lastBeatMs !== undefined && b.lastBeatMs > lastPass);
    const resumed = recent.filter((b) => (b.gapMs ?? 0) > staleMs);
    if (recent.length > 0 && resumed.length / recent.length >= OUTAGE_SHARE) {
      pathSince = nowMs;
      pathNote = `${resumed.length} of ${recent.length} nodes beat again after a gap: an outage of the path ended, silence counts from now`;
    }
  }

  // Passes come every sweep interval, give or take the timer's half second: a deadline after
  // the next one is that pass's to keep.
  const beforeNextPass = (deadline: number) => deadline <= nowMs + policy.sweepIntervalMs + 1_000;
  const nodes = beats.map((b): NodeJudgement => {
    const from = Math.max(b.lastBeatMs ?? b.sinceMs, b.sinceMs);
    const silenceMs = Math.max(0, nowMs - from);
    // A recent beat is evidence of life whatever the path did: a SUSPECT or LOST node is back.
    if (silenceMs < policy.suspectAfterMs) {
      // A beat late already may be the last: watched, when it would be LOST before the next pass.
      const deadline = pathSince === null ? undefined : Math.max(from, pathSince) + policy.lostAfterMs;
      const watched = deadline !== undefined && silenceMs >= watchAfterMs(policy) && beforeNextPass(deadline);
      return { node: b.node, silenceMs, verdict: "READY", ...(watched ? { deadlineMs: deadline } : {}) };
    }
    if (pathSince === null) return { node: b.node, silenceMs, verdict: undefined };
    // Silence counts only while the path is known to work.
    const vouched = Math.max(from, pathSince);
    const counted = nowMs - vouched;
    if (counted >= policy.lostAfterMs) return { node: b.node, silenceMs, verdict: "LOST" };
    if (counted >= policy.suspectAfterMs) {
      const deadline = vouched + policy.lostAfterMs;
      return {
        node: b.node,
        silenceMs,
        verdict: b.state === "LOST" ? "LOST" : "SUSPECT",
        ...(b.state !== "LOST" && beforeNextPass(deadline) ? { deadlineMs: deadline } : {}),
      };
    }
    return { node: b.node, silenceMs, verdict: b.state };
  });
  return { path: { lastPassAt: nowMs, pathSince }, pathNote, nodes };
}
