/**
 * Repair, a pass of the sweeper over each volume (DESIGN.md, "Health,
 * repair, replacement"). The record is the state: every step is a
 * conditional write on the volume's row, so concurrent passes and many
 * reporters of one failure make one repair, a pass interrupted anywhere is
 * finished by the next, and a pass right after finds nothing to do.
 *
 * For an ATTACHED volume, in order:
 *
 * 1. OFFLINE replicas that may be resynced (pool GOOD) are leased under the
 *    volume's lease id, breaking whatever lease a former writer left there;
 * 2. the plan (repair-plan.ts) is written in one write, its events noted,
 *    and the owner's desired-state generation bumped when what it is told
 *    changed;
 * 3. each CREATING replica (a rebuild's new blob) gets its blob and its
 *    lease, then goes REBUILDING (`replica-rebuild-started`); a blob that
 *    cannot be made sends it RETIRING, and the next pass places another;
 * 4. each RETIRING replica's blob is deleted, best effort (an unreachable
 *    pool keeps it, as an orphan for the reconciliation to report), and the
 *    replica is dropped from the record (`replica-retired`).
 *
 * A DETACHED volume has no writer to copy: the same steps run under a
 * lease of the control plane's own, and the storage service copies
 * (repair-detached.ts).
 */
import { randomBytes } from "node:crypto";
import type { Replica } from "../../contract/volume.ts";
import { bumpDesiredGeneration } from "../arbiter/desired-generation.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { note } from "../lifecycle/note.ts";
import { replicasPerPool } from "../lifecycle/placement.ts";
import type { NodeRecord } from "../registry/nodes.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { movedReplica } from "../registry/replica-states.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import { createReplicaBlob, deleteReplicaBlob, replicaUri } from "../storage/replica-blobs.ts";
import { takeReplicaLease } from "../storage/replica-leases.ts";
import { StorageFailure } from "../storage/storage-failure.ts";
import { planRepair, resyncCandidates } from "./repair-plan.ts";
import type { RepairPolicy } from "./repair-policy.ts";
import { repairDetached } from "./repair-detached.ts";
import { poolsForNewReplicas } from "./replica-placement.ts";

/** What one pass knows of the cluster, read once for all volumes. */
export interface RepairContext {
  /** Nodes as the sweep left them, by name: their rows hold the writers' reports. */
  nodes: ReadonlyMap<string, NodeRecord>;
  /** Pools as judged this pass, by name. */
  pools: ReadonlyMap<string, PoolRecord>;
  /** Replicas per pool; updated as this pass places new ones. */
  load: Map<string, number>;
  policy: RepairPolicy;
}

/** Repair one volume as far as it goes this pass. Returns whether its record changed. */
export async function repairVolume(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
): Promise<boolean> {
  const state = read.value.status.state;
  if (state === "DETACHED") return repairDetached(cp, read, ctx);
  if (state !== "ATTACHED" || read.value.leaseId === null) return false;
  const before = read.value;
  let current = await applyPlan(cp, read, ctx, read.value.leaseId);
  current = await buildCreating(cp, current, ctx, read.value.leaseId);
  current = await dropRetiring(cp, current, ctx);
  return current.value !== before;
}

/**
 * Steps 1 and 2. Replicas to resync are leased under `leaseId`, breaking
 * other leases when `breakOthers`; with no `leaseId` none is resynced.
 */
export async function applyPlan(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
  leaseId: string | undefined,
  breakOthers = true,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  const now = cp.now();
  const owner = v.status.ownerNode === null ? undefined : ctx.nodes.get(v.status.ownerNode);
  const report = owner?.volumes.find((r) => r.volume === v.name && r.epoch === v.status.epoch);

  const leased = new Set<string>();
  const leaseErrors = new Map<string, string>();
  const candidates = leaseId === undefined ? [] : resyncCandidates(v, ctx.pools, now, ctx.policy);
  for (const r of candidates) {
    try {
      cp.faults?.beforeStep(`repair-lease ${r.id}`);
      await takeReplicaLease(ctx.pools.get(r.pool)!, v.name, r.id, leaseId!, breakOthers ? "writer" : "copy");
      leased.add(r.id);
    } catch (err) {
      if (!(err instanceof StorageFailure)) throw err;
      leaseErrors.set(r.id, err.message);
    }
  }

  const plan = planRepair({
    volume: v,
    report,
    reportedAt: owner?.lastReportAt,
    pools: ctx.pools,
    load: ctx.load,
    leased,
    leaseErrors,
    now,
    policy: ctx.policy,
    newReplicaId: () => randomBytes(6).toString("hex"),
  });
  if (!plan.changed) return read;
  const next = withReplicas(v, plan.replicas, now);
  const written = await replaceRecord(cp, read, next);
  for (const r of plan.replicas) {
    if (!v.status.replicas.some((o) => o.id === r.id))
      ctx.load.set(r.pool, (ctx.load.get(r.pool) ?? 0) + 1);
  }
  for (const event of plan.events) await note(cp, event);
  if (plan.statesChanged) await tellOwner(cp, next);
  return written;
}

/** Step 3; new blobs are leased under `leaseId` (a new blob has no other lease to break). */
export async function buildCreating(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
  leaseId: string,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  const creating = v.status.replicas.filter((r) => r.state === "CREATING");
  if (creating.length === 0) return read;
  const now = cp.now();
  const outcomes = new Map<string, Replica>();
  for (const r of creating) {
    try {
      const pool = ctx.pools.get(r.pool);
      if (!pool) throw new StorageFailure(r.pool, "find pool", new Error("not registered"));
      cp.faults?.beforeStep(`create-replica-blob ${r.id}`);
      await createReplicaBlob(pool, v.name, r.id, v.spec.sizeBytes);
      cp.faults?.beforeStep(`repair-lease ${r.id}`);
      await takeReplicaLease(pool, v.name, r.id, leaseId, "writer");
      const why = r.replaces ? `rebuild ordered, to replace ${r.replaces}` : "rebuild ordered";
      outcomes.set(r.id, movedReplica(r, "REBUILDING", now, why));
    } catch (err) {
      if (!(err instanceof StorageFailure)) throw err;
      outcomes.set(r.id, movedReplica(r, "RETIRING", now, `its blob could not be made: ${err.message}`));
    }
  }
  const next = withReplicas(
    v,
    v.status.replicas.map((r) => outcomes.get(r.id) ?? r),
    now,
  );
  const written = await replaceRecord(cp, read, next);
  for (const r of outcomes.values()) {
    if (r.state !== "REBUILDING") continue;
    await note(cp, {
      type: "replica-rebuild-started",
      volume: v.name,
      pool: r.pool,
      ...(v.status.ownerNode === null ? {} : { node: v.status.ownerNode }),
      message: `volume ${v.name}: replica ${r.id} on ${r.pool} is being rebuilt${r.replaces ? ` to replace ${r.replaces}` : ""}`,
      data: { replica: r.id, replaces: r.replaces ?? null },
    });
  }
  await tellOwner(cp, next);
  return written;
}

/** Step 4. */
export async function dropRetiring(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  ctx: RepairContext,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  const retiring = v.status.replicas.filter((r) => r.state === "RETIRING");
  if (retiring.length === 0) return read;
  const left = new Map<string, string | undefined>();
  for (const r of retiring) {
    const pool = ctx.pools.get(r.pool);
    try {
      if (!pool) throw new StorageFailure(r.pool, "find pool", new Error("not registered"));
      cp.faults?.beforeStep(`delete-replica-blob ${r.id}`);
      await deleteReplicaBlob(pool, v.name, r.id);
      left.set(r.id, undefined);
    } catch (err) {
      if (!(err instanceof StorageFailure)) throw err;
      left.set(r.id, err.message);
    }
  }
  const dropped = new Set(left.keys());
  const replicas = v.status.replicas
    .filter((r) => !dropped.has(r.id))
    .map((r) => {
      if (!r.replaces || !dropped.has(r.replaces)) return r;
      const { replaces: _done, ...rest } = r;
      return rest;
    });
  const next = withReplicas(v, replicas, cp.now());
  const written = await replaceRecord(cp, read, next);
  for (const r of retiring) {
    ctx.load.set(r.pool, Math.max(0, (ctx.load.get(r.pool) ?? 1) - 1));
    const orphaned = left.get(r.id);
    await note(cp, {
      type: "replica-retired",
      volume: v.name,
      pool: r.pool,
      message:
        `volume ${v.name}: replica ${r.id} on ${r.pool} retired (${r.message ?? "no reason recorded"})` +
        (orphaned ? `; its blob is left as an orphan: ${orphaned}` : "; its blob is deleted"),
      data: { replica: r.id, blobDeleted: orphaned === undefined },
    });
  }
  return written;
}

/** Write `next` over `read`, conditional on its ETag: every repair write goes through here. */
export async function replaceRecord(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
  next: VolumeRecord,
): Promise<Read<VolumeRecord>> {
  cp.faults?.beforeStep("repair-record");
  return { value: next, etag: await volumes(cp.registry).replace(next, read.etag) };
}

export function withReplicas(v: VolumeRecord, replicas: Replica[], now: Date): VolumeRecord {
  return { ...v, status: { ...v.status, replicas }, updatedAt: now.toISOString() };
}

/** The owner's agent learns the new replica set at once. */
async function tellOwner(cp: ControlPlane, v: VolumeRecord): Promise<void> {
  if (v.status.ownerNode !== null) await bumpDesiredGeneration(cp, v.status.ownerNode, "replicas");
}

/**
 * Start replacing replica `replicaId` of `volume` with a new one on another
 * pool (for the release of its pool, say). Idempotent: if a replica with
 * `replaces === replicaId` exists, nothing new is made. The new replica is
 * recorded CREATING; the sweeper's repair makes its blob and has it rebuilt
 * (by the writer, or by a server-side copy while the volume is detached),
 * and retires the old one when the
 * new one is ONLINE. The move is done when `replicaId` is gone from the
 * record. Throws `VolumeNotFound`, and `InsufficientPools` when no pool
 * can take the replica.
 */
export async function moveReplica(
  cp: ControlPlane,
  volume: string,
  replicaId: string,
  reason: string,
): Promise<VolumeRecord> {
  return retryOnConflict(async () => {
    const table = volumes(cp.registry);
    const [read, allPools, allVolumes] = await Promise.all([
      table.get(volume),
      pools(cp.registry).list(),
      table.list(),
    ]);
    if (!read) throw new ApiError("VolumeNotFound", `no volume named ${volume}`, { volume });
    const v = read.value;
    const old = v.status.replicas.find((r) => r.id === replicaId);
    if (!old || v.status.replicas.some((r) => r.replaces === replicaId && r.state !== "RETIRING"))
      return v;
    const [pool] = poolsForNewReplicas(
      v,
      1,
      allPools.map((p) => p.value),
      replicasPerPool(allVolumes.map((x) => x.value)),
    );
    const id = randomBytes(6).toString("hex");
    const now = cp.now();
    const replacement: Replica = {
      id,
      pool: pool!.name,
      uri: replicaUri(pool!, v.name, id),
      state: "CREATING",
      since: now.toISOString(),
      message: `creating its blob, to replace ${replicaId}: ${reason}`.slice(0, 1024),
      replaces: replicaId,
    };
    const next = withReplicas(v, [...v.status.replicas, replacement], now);
    await table.replace(next, read.etag);
    return next;
  });
}
