/**
 * A writer reports `replicas-diverged` (contract/signals.ts): its volume
 * was taken away (detach, fencing) while writes were in flight, and some of
 * them reached some replicas only. As for a lost writer (arbiter/fence.ts
 * `withWriterLost`), every ONLINE replica but the first goes OFFLINE, to be
 * copied from it in full: by the control plane while the volume is
 * DETACHED (repair-detached.ts); by its new writer if it is ATTACHED again,
 * which is told the replica is `stale` (desired-state.ts), so that it keeps
 * no dirty log for it and brings it back by a full copy.
 *
 * Only the node that wrote the volume at that epoch is heard, as the
 * registry recorded it (reported-events.ts `wroteAt`): the volume's record
 * keeps its last writers (`status.writers`), however long ago they were
 * attached. Events are not asked: a node's own are its word, not evidence,
 * and the control plane's expire with the event retention. A volume
 * whose writer is changing (attaching, detaching, fencing) is left alone:
 * the report stays in the event log for an operator, and fencing treats
 * the replicas as a lost writer's anyway.
 */
import type { ReportedEvent } from "../../contract/node.ts";
import { withWriterLost } from "../arbiter/fence.ts";
import { noteOffline } from "../arbiter/attach.ts";
import { bumpDesiredGeneration } from "../arbiter/desired-generation.ts";
import type { ControlPlane } from "../control-plane.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { volumes } from "../registry/volumes.ts";
import { wroteAt } from "./reported-events.ts";

/** What became of the report. */
export type DivergedOutcome = "applied" | "not-the-writer" | "changing" | "nothing-to-do";

export async function replicasDiverged(
  cp: ControlPlane,
  node: string,
  event: ReportedEvent,
): Promise<DivergedOutcome> {
  const volume = event.volume;
  const epoch = event.data?.epoch;
  if (volume === undefined || typeof epoch !== "number") return "nothing-to-do";
  return retryOnConflict(async () => {
    const table = volumes(cp.registry);
    const read = await table.get(volume);
    if (!read) return "nothing-to-do";
    const v = read.value;
    if (!wroteAt(v, node, epoch)) return "not-the-writer";
    const state = v.status.state;
    if (state !== "DETACHED" && state !== "ATTACHED") return "changing";
    const replicas = withWriterLost(v.status.replicas, cp.now());
    if (replicas.every((r, i) => r === v.status.replicas[i])) return "nothing-to-do";
    const next = { ...v, status: { ...v.status, replicas }, updatedAt: cp.now().toISOString() };
    await table.replace(next, read.etag);
    if (state === "ATTACHED") await bumpDesiredGeneration(cp, v.status.ownerNode!, "replicas");
    await noteOffline(cp, v, next);
    return "applied";
  });
}
