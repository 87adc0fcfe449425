/**
 * Repair of a DETACHED volume: no writer holds it, so the storage service
 * copies (Copy Blob, storage/replica-copy.ts) and the control plane
 * orders, polls and records, one sweep pass at a time. A pool released or
 * lost thus empties whether or not its volumes are attached, and a volume
 * left detached gets its redundancy back.
 *
 * In order, each pass:
 *
 * 1. When the plan (repair-plan.ts, with no writer's report) has copying to
 *    do, the record gets a copy lease id (`copyLeaseId`), written before
 *    any lease exists so that a crash never leaves a lease nobody knows.
 * 2. repair.ts steps 1 to 3 under that id, with one difference: a lease
 *    held by someone else is never broken here (it can only be an attach
 *    racing this pass), the replica waits instead.
 * 3. Each RESYNCING or REBUILDING replica without a copy gets one, from the
 *    first ONLINE replica (`copyId` recorded; a copy that is done at once,
 *    as within one account it may be, is ONLINE at once).
 * 4. Each copy is polled: progress in percent on whole-percent moves;
 *    ONLINE when it succeeded (`replica-online`); OFFLINE when it failed
 *    (`replica-offline`), to be resynced by a later pass.
 * 5. repair.ts step 4: RETIRING replicas dropped.
 * 6. With nothing left to copy: the copy leases released (only ours), the
 *    offline marks that name replicas now ONLINE taken off the ONLINE
 *    replicas' metadata (so the next writer does not copy them again), and
 *    `copyLeaseId` removed. It stays while a pool keeps a lease of ours
 *    (released next pass), and while a replica waits for a lease held by
 *    someone else (so that its retries do not make a new id every pass).
 *
 * A resync here copies the whole blob: what the replica missed was
 * recorded in its last writer's dirty-region log, which is on that node.
 *
 * An attach fences all of this: it breaks the copy lease with every other
 * lease, then stops any copy still pending (`stopServerCopies`, called
 * from arbiter/attach.ts); its writer copies what is left.
 */
import { randomUUID } from "node:crypto";
import type { Replica, ReplicaState } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { note } from "../lifecycle/note.ts";
import { pools } from "../registry/pools.ts";
import { movedReplica } from "../registry/replica-states.ts";
import type { Read } from "../registry/rows.ts";
import type { VolumeRecord } from "../registry/volumes.ts";
import {
  clearOfflineMarks,
  type ReplicaBlobRef,
  type ReplicaCopyState,
  replicaCopyState,
  startReplicaCopy,
  stopReplicaCopy,
} from "../storage/replica-copy.ts";
import { releaseReplicaLease, takeReplicaLease } from "../storage/replica-leases.ts";
import { StorageFailure } from "../storage/storage-failure.ts";
import {
  applyPlan,
  buildCreating,
  dropRetiring,
  type RepairContext,
  replaceRecord,
  withReplicas,
} from "./repair.ts";
import { LEASE_WAIT, planRepair, type RepairEvent, resyncCandidates } from "./repair-plan.ts";

/** States with copying still to do. */
const COPY_WORK: readonly ReplicaState[] = ["CREATING", "RESYNCING", "REBUILDING"];
const COPYING: readonly ReplicaState[] = ["RESYNCING", "REBUILDING"];

/** Said of a replica whose server-side copy an attach stopped: its writer copies now. */
export const COPY_STOPPED = "server-side copy stopped by the attach: its writer copies it";

/** Repair one DETACHED volume as far as it goes this pass. Returns whether its record changed. */
export async function repairDetached(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
): Promise<boolean> {
  const before = read.value;
  let current = read;
  if (current.value.copyLeaseId === undefined && hasCopyWork(current.value, ctx, cp.now()))
    current = await withCopyLease(cp, current);
  const leaseId = current.value.copyLeaseId;
  current = await applyPlan(cp, current, ctx, leaseId, false);
  if (leaseId !== undefined) {
    current = await buildCreating(cp, current, ctx, leaseId);
    current = await startCopies(cp, current, ctx, leaseId);
    current = await pollCopies(cp, current, ctx);
  }
  current = await dropRetiring(cp, current, ctx);
  if (current.value.copyLeaseId !== undefined && !hasWork(current.value) && !awaitsLease(current.value))
    current = await endCopyLease(cp, current, ctx);
  return current.value !== before;
}

/**
 * A replica waits for a lease someone else holds: the copy lease id is
 * kept for its next try, rather than dropped and made anew every pass.
 */
function awaitsLease(v: VolumeRecord): boolean {
  return v.status.replicas.some((r) => r.state === "OFFLINE" && r.message?.startsWith(LEASE_WAIT));
}

function hasWork(v: VolumeRecord): boolean {
  return v.status.replicas.some((r) => COPY_WORK.includes(r.state));
}

/** Whether the plan would copy anything now, were the candidates leased. */
function hasCopyWork(v: VolumeRecord, ctx: RepairContext, now: Date): boolean {
  if (hasWork(v)) return true;
  const candidates = resyncCandidates(v, ctx.pools, now, ctx.policy);
  const dry = planRepair({
    volume: v,
    report: undefined,
    reportedAt: undefined,
    pools: ctx.pools,
    load: ctx.load,
    leased: new Set(candidates.map((r) => r.id)),
    leaseErrors: new Map(),
    now,
    policy: ctx.policy,
    newReplicaId: () => "planned",
  });
  return hasWork({ ...v, status: { ...v.status, replicas: dry.replicas } });
}

/** Step 1. */
async function withCopyLease(cp: ControlPlane, read: Read<VolumeRecord>): Promise<Read<VolumeRecord>> {
  const next: VolumeRecord = { ...read.value, copyLeaseId: randomUUID(), updatedAt: cp.now().toISOString() };
  return replaceRecord(cp, read, next);
}

/** Step 3. */
async function startCopies(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
  leaseId: string,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  const waiting = v.status.replicas.filter((r) => COPYING.includes(r.state) && r.copyId === undefined);
  // The plan orders no copy without an ONLINE replica; one lost since waits for the next pass.
  const source = v.status.replicas.find((r) => r.state === "ONLINE");
  if (waiting.length === 0 || !source) return read;
  const now = cp.now();
  const events: RepairEvent[] = [];
  const outcomes = new Map<string, Replica>();
  for (const r of waiting) {
    const verb = r.state === "RESYNCING" ? "resync" : "rebuild";
    try {
      const target = ref(ctx, r);
      // Ours already if this pass ordered it; not if its writer was copying when it was detached.
      await takeReplicaLease(target.pool, v.name, r.id, leaseId, "copy");
      cp.faults?.beforeStep(`start-copy ${r.id}`);
      const started = await startReplicaCopy(v.name, ref(ctx, source), target, leaseId, v.spec.sizeBytes);
      const from = `server-side copy from ${source.id} on ${source.pool}`;
      outcomes.set(r.id, settle(v, r, started, from, now, events));
    } catch (err) {
      if (!(err instanceof StorageFailure)) throw err;
      const why = `${verb} failed: its server-side copy could not start: ${err.message}`;
      outcomes.set(r.id, movedReplica(r, "OFFLINE", now, why));
      events.push(offlineEvent(v, r, why));
    }
  }
  return write(cp, read, outcomes, events);
}

/** Step 4. */
async function pollCopies(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  const copying = v.status.replicas.filter((r) => COPYING.includes(r.state) && r.copyId !== undefined);
  if (copying.length === 0) return read;
  const now = cp.now();
  const events: RepairEvent[] = [];
  const outcomes = new Map<string, Replica>();
  for (const r of copying) {
    let state: ReplicaCopyState;
    try {
      state = await replicaCopyState(v.name, ref(ctx, r));
    } catch (err) {
      // Its pool does not answer: the copy is polled again next pass.
      if (!(err instanceof StorageFailure)) throw err;
      continue;
    }
    if (state.copyId !== r.copyId) state = { ...state, status: "failed", description: "another copy took its place" };
    const next = settle(v, r, state, "server-side copy", now, events);
    if (next !== r) outcomes.set(r.id, next);
  }
  return write(cp, read, outcomes, events);
}

/** `r` as its copy's `state` leaves it; events for the moves are pushed on `events`. */
function settle(
  v: VolumeRecord,
  r: Replica,
  state: ReplicaCopyState,
  what: string,
  now: Date,
  events: RepairEvent[],
): Replica {
  const verb = r.state === "RESYNCING" ? "resync" : "rebuild";
  if (state.status === "success") {
    events.push(event(v, r, "replica-online", `is ONLINE: ${verb} done (server-side copy)`));
    return movedReplica(r, "ONLINE", now);
  }
  if (state.status === "pending" && state.copyId !== undefined) {
    const { copiedBytes, totalBytes } = state;
    const progress =
      copiedBytes !== undefined && totalBytes ? Math.floor((100 * copiedBytes) / totalBytes) : 0;
    if (r.copyId === state.copyId && r.progress !== undefined && progress - r.progress < 1) return r;
    const bytes = copiedBytes !== undefined && totalBytes ? ` (${copiedBytes} of ${totalBytes} bytes)` : "";
    return { ...r, copyId: state.copyId, progress, message: `${verb}: ${progress}%${bytes}, ${what}` };
  }
  const why = `${verb} failed: its server-side copy ${state.status ?? "vanished"}${state.description ? `: ${state.description}` : ""}`;
  events.push(offlineEvent(v, r, why));
  return movedReplica(r, "OFFLINE", now, why);
}

/** Step 6. */
async function endCopyLease(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  const leaseId = v.copyLeaseId!;
  const held = v.status.replicas.filter((r) => r.state !== "RETIRING");
  const released = await Promise.allSettled(
    held.map(async (r) => {
      cp.faults?.beforeStep(`release-copy-lease ${r.id}`);
      await releaseReplicaLease(ref(ctx, r).pool, v.name, r.id, leaseId);
    }),
  );
  const failed = released.find((x) => x.status === "rejected");
  if (failed) {
    if (!(failed.reason instanceof StorageFailure)) throw failed.reason;
    // A pool that does not answer keeps our lease: the id stays, to release it next pass.
    return read;
  }
  const online = v.status.replicas.filter((r) => r.state === "ONLINE");
  const inSync = new Set(online.map((r) => r.id));
  // Best effort: a mark left only costs the next writer a full copy of an in-sync replica.
  await Promise.allSettled(online.map((r) => clearOfflineMarks(v.name, ref(ctx, r), inSync)));
  const { copyLeaseId: _done, ...rest } = v;
  return replaceRecord(cp, read, { ...rest, updatedAt: cp.now().toISOString() });
}

async function write(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  outcomes: ReadonlyMap<string, Replica>,
  events: readonly RepairEvent[],
): Promise<Read<VolumeRecord>> {
  if (outcomes.size === 0) return read;
  const v = read.value;
  const next = withReplicas(
    v,
    v.status.replicas.map((r) => outcomes.get(r.id) ?? r),
    cp.now(),
  );
  const written = await replaceRecord(cp, read, next);
  for (const e of events) await note(cp, e);
  return written;
}

function ref(ctx: RepairContext, r: Replica): ReplicaBlobRef {
  const pool = ctx.pools.get(r.pool);
  if (!pool) throw new StorageFailure(r.pool, "find pool", new Error("not registered"));
  return { pool, id: r.id };
}

function event(v: VolumeRecord, r: Replica, type: RepairEvent["type"], message: string, data?: object): RepairEvent {
  return {
    type,
    volume: v.name,
    pool: r.pool,
    message: `volume ${v.name}: replica ${r.id} on ${r.pool} ${message}`,
    data: { replica: r.id, ...data },
  };
}

function offlineEvent(v: VolumeRecord, r: Replica, why: string): RepairEvent {
  return event(v, r, "replica-offline", `is OFFLINE: ${why}`, { error: why });
}

/**
 * For an attach, once it holds every reachable replica under `leaseId`:
 * stop the server-side copies still pending on the volume's replicas
 * (whether or not the record knew of them: a pass may have started one
 * and lost the race to record it). Returns the replicas as the attach
 * records them: a copy stopped or recorded leaves its replica to the
 * writer (RESYNCING and REBUILDING stay, the writer copies in full); one
 * whose copy cannot be stopped goes OFFLINE.
 */
export async function stopServerCopies(
  cp: ControlPlane,
  v: VolumeRecord,
  leaseId: string,
  skip: ReadonlySet<string>,
): Promise<Replica[]> {
  const now = cp.now();
  const candidates = v.status.replicas.filter(
    (r) => r.state !== "ONLINE" && r.state !== "CREATING" && r.state !== "RETIRING" && !skip.has(r.id),
  );
  const outcomes = new Map<string, Replica>();
  await Promise.all(
    candidates.map(async (r) => {
      const { copyId: _copy, progress: _progress, ...rest } = r;
      try {
        const pool = (await pools(cp.registry).get(r.pool))?.value;
        if (!pool) return;
        const target = { pool, id: r.id };
        const state = await replicaCopyState(v.name, target);
        const pending = state.status === "pending" && state.copyId !== undefined;
        if (pending) await stopReplicaCopy(v.name, target, state.copyId!, leaseId, v.spec.sizeBytes);
        if (pending || r.copyId !== undefined) outcomes.set(r.id, { ...rest, message: COPY_STOPPED });
      } catch (err) {
        if (!(err instanceof StorageFailure)) throw err;
        const why = `its server-side copy could not be stopped: ${err.message}`;
        outcomes.set(r.id, r.state === "OFFLINE" ? { ...rest, message: why } : movedReplica(r, "OFFLINE", now, why));
      }
    }),
  );
  return v.status.replicas.map((r) => outcomes.get(r.id) ?? r);
}
