/**
 * Fencing the volume of a lost node, and failing it over.
 *
 * 1. ATTACHED -> FENCING with epoch + 1 (conditional: one sweeper wins);
 *    the lost node stays recorded as owner until the volume moves on, and
 *    its desired-state generation is bumped (should it still be alive, it
 *    learns to stop serving the volume).
 * 2. Drop the lease on every replica: the lost node's next write, which
 *    carries the old lease id, fails at the storage service. Every ONLINE
 *    replica but the first goes OFFLINE, to be resynced in full
 *    (`withWriterLost`).
 * 3. With `failover: automatic` and an eligible node: FENCING -> ATTACHING
 *    (epoch + 1, that node, a fresh lease id), then the rest of attach.
 *    With `manual`: FENCING -> DETACHED. Automatic with no eligible node
 *    stays FENCING, leases dropped, and the next sweep tries again.
 *
 * Every step repeats safely, so a FENCING volume left by a crash is
 * resumed from step 2 by the next sweep.
 *
 * A replica whose pool cannot be reached in step 2 does not hold the
 * volume back when another ONLINE replica was reached: it is recorded
 * OFFLINE by the write of step 3 (`replica-offline`), and its lease is
 * taken by the repair before it is resynced, which fences the lost node
 * out of it too (arbiter/replica-leases.ts).
 *
 * Step 1 also marks the volume as owed a failover (`status.failoverPending`),
 * and the mark stays through step 3 until the attach completes. Should the
 * failover attach be interrupted (a crash or a storage failure before
 * ATTACHED), the roll-back leaves the volume DETACHED and still marked, and
 * the next sweep places it again (`resumeFailover`). The manual path, an
 * operator's attach or detach, a change of the policy to manual and a
 * completed attach clear the mark.
 *
 * The `volume-failed-over` event names the node the volume failed over
 * `from`. A resumed failover no longer has it in the record (the roll-back
 * cleared the owner), so it takes it from the volume's latest
 * `volume-fenced` event; should that event be missing (its write failed),
 * `from` is null, as it is for a volume fenced with no owner.
 */
import { randomUUID } from "node:crypto";
import { WRITER_LOST } from "../../contract/signals.ts";
import type { Replica } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { note } from "../lifecycle/note.ts";
import { eventsNewestFirst } from "../registry/events.ts";
import type { NodeRecord } from "../registry/nodes.ts";
import { forgetOwner, noteOwner } from "../registry/owners.ts";
import { movedReplica } from "../registry/replica-states.ts";
import type { Read } from "../registry/rows.ts";
import { volumeStates } from "../registry/volume-states.ts";
import { type VolumeRecord, volumes, withFailoverPending } from "../registry/volumes.ts";
import { completeAttach, noteOffline } from "./attach.ts";
import { bumpDesiredGeneration } from "./desired-generation.ts";
import { chooseFailoverNode } from "./failover-placement.ts";
import { dropReachableLeases, withUnreachableOffline } from "./replica-leases.ts";

/**
 * The replicas once their writer is lost: the first ONLINE one stays, the
 * other ONLINE ones go OFFLINE, to be resynced from it in full. The lost
 * writer may have died with writes in flight that reached some replicas
 * and not others; nothing recorded which regions, so the replicas may
 * differ anywhere, and a read must never return new data from one replica
 * and later old data from another. The resync starts as soon as a writer
 * is back (repair-plan.ts `resyncCandidates`): no pool is in doubt.
 */
export function withWriterLost(replicas: readonly Replica[], at: Date): Replica[] {
  const kept = replicas.find((r) => r.state === "ONLINE");
  return replicas.map((r) =>
    r.state !== "ONLINE" || r === kept
      ? r
      : {
          ...movedReplica(
            r,
            "OFFLINE",
            at,
            `${WRITER_LOST}: writes in flight may have reached some replicas only; resynced in full from ${kept!.id}`,
          ),
          stale: true,
        },
  );
}

/** What became of one volume, and where it went if it moved. */
export type FenceOutcome =
  | { kind: "failed-over"; node: string }
  | { kind: "detached" }
  | { kind: "waiting" };

/** Step 1; returns the FENCING record to carry on with. */
export async function markFencing(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  if (v.status.state === "FENCING") return read;
  volumeStates.check(v.status.state, "FENCING");
  const next: VolumeRecord = {
    ...v,
    status: withFailoverPending(
      { ...v.status, state: "FENCING", epoch: v.status.epoch + 1 },
      true,
    ),
    updatedAt: cp.now().toISOString(),
  };
  cp.faults?.beforeStep("mark-fencing");
  const etag = await volumes(cp.registry).replace(next, read.etag);
  if (v.status.ownerNode !== null) await bumpDesiredGeneration(cp, v.status.ownerNode, "fenced");
  await note(cp, {
    type: "volume-fenced",
    volume: v.name,
    ...(v.status.ownerNode === null ? {} : { node: v.status.ownerNode }),
    message: `volume ${v.name} fenced: its owner ${v.status.ownerNode} is lost`,
    data: { epoch: next.status.epoch },
  });
  return { value: next, etag };
}

/** Steps 2 and 3 for a FENCING volume. `candidates` are the nodes it may move to. */
export async function finishFencing(
  cp: ControlPlane,
  fencing: Read<VolumeRecord>,
  candidates: readonly NodeRecord[],
  load: ReadonlyMap<string, number>,
): Promise<FenceOutcome> {
  const unreachable = await dropReachableLeases(cp, fencing.value, fencing.value.leaseId);
  const now = cp.now();
  const v: VolumeRecord = {
    ...fencing.value,
    status: {
      ...fencing.value.status,
      replicas: withWriterLost(
        withUnreachableOffline(fencing.value.status.replicas, unreachable, now, "when fenced"),
        now,
      ),
    },
  };
  const table = volumes(cp.registry);
  const target =
    v.spec.failover === "automatic" ? chooseFailoverNode(v, candidates, load) : undefined;
  if (v.spec.failover === "automatic" && !target) return { kind: "waiting" };
  if (!target) {
    volumeStates.check("FENCING", "DETACHED");
    const detached: VolumeRecord = {
      ...v,
      status: withFailoverPending({ ...v.status, state: "DETACHED", ownerNode: null }, false),
      leaseId: null,
      updatedAt: cp.now().toISOString(),
    };
    cp.faults?.beforeStep("mark-detached");
    const etag = await table.replace(detached, fencing.etag);
    if (v.status.ownerNode !== null) {
      await forgetOwner(cp.registry, v.status.ownerNode, v.name, etag).catch(cp.report);
    }
    await noteOffline(cp, fencing.value, detached);
    await note(cp, {
      type: "volume-detached",
      volume: v.name,
      message: `volume ${v.name} detached after fencing (failover is manual)`,
    });
    return { kind: "detached" };
  }
  const outcome = await failOver(
    cp,
    { value: v, etag: fencing.etag },
    target,
    v.status.ownerNode,
    false,
  );
  await noteOffline(cp, fencing.value, v);
  return outcome;
}

/**
 * A DETACHED volume still owed a failover (an earlier failover attach was
 * rolled back): attach it to an eligible node, as step 3 would have. With
 * none eligible it stays DETACHED and marked, for the next sweep.
 */
export async function resumeFailover(
  cp: ControlPlane,
  detached: Read<VolumeRecord>,
  candidates: readonly NodeRecord[],
  load: ReadonlyMap<string, number>,
): Promise<FenceOutcome> {
  const v = detached.value;
  if (v.status.state !== "DETACHED" || v.status.failoverPending !== true) {
    throw new Error(`volume ${v.name} is not owed a failover`);
  }
  const target = chooseFailoverNode(v, candidates, load);
  if (!target) return { kind: "waiting" };
  return failOver(cp, detached, target, await fencedFrom(cp, v.name), true);
}

/**
 * The owner a volume was last fenced from, as its latest `volume-fenced`
 * event recorded it. The volume's events are read newest first, a row at
 * a time, and the fencing is recent, so the read stops at its first match
 * within a request or two. A failed read is reported, not thrown: the
 * failover matters more than its event's `from`.
 */
async function fencedFrom(cp: ControlPlane, volume: string): Promise<string | null> {
  const horizon = { now: cp.now(), retentionDays: cp.eventRetentionDays };
  try {
    const fenced = { volume, type: "volume-fenced" };
    for await (const event of eventsNewestFirst(cp.registry, fenced, horizon, { pageSize: 1 }))
      return event.node ?? null;
    return null;
  } catch (err) {
    cp.report(err);
    return null;
  }
}

/**
 * FENCING or DETACHED -> ATTACHING on `target`, keeping the mark, then the
 * rest of attach. `from` is the node it fails over from, for the event.
 */
async function failOver(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  target: NodeRecord,
  from: string | null,
  resumed: boolean,
): Promise<FenceOutcome> {
  const v = read.value;
  volumeStates.check(v.status.state, "ATTACHING");
  const claimed: VolumeRecord = {
    ...v,
    status: withFailoverPending(
      { ...v.status, state: "ATTACHING", ownerNode: target.name, epoch: v.status.epoch + 1 },
      true,
    ),
    leaseId: randomUUID(),
    updatedAt: cp.now().toISOString(),
  };
  // Before the claim, never after: the owner index may hold more than the truth, never less.
  await noteOwner(cp.registry, target.name, v.name);
  cp.faults?.beforeStep("claim");
  const etag = await volumes(cp.registry).replace(claimed, read.etag);
  const previous = v.status.ownerNode;
  if (previous !== null && previous !== target.name) {
    await forgetOwner(cp.registry, previous, v.name, etag).catch(cp.report);
  }
  const attached = await completeAttach(cp, { value: claimed, etag });
  await note(cp, {
    type: "volume-failed-over",
    volume: v.name,
    node: target.name,
    message: `volume ${v.name} failed over${from === null ? "" : ` from ${from}`} to ${target.name} (epoch ${attached.status.epoch})${resumed ? ", resuming an interrupted failover" : ""}`,
    data: { from, epoch: attached.status.epoch, ...(resumed ? { resumed: true } : {}) },
  });
  return { kind: "failed-over", node: target.name };
}
