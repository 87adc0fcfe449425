/**
 * The record side of repair, as a pure function: given an ATTACHED
 * volume's record, its writer's latest report, the pools' health and the
 * clock, what the replica list becomes and which events tell of it. The
 * storage side (leases, blobs) is in repair.ts, which writes the plan with
 * one conditional write.
 *
 * Rules (DESIGN.md, "Health, repair, replacement"):
 * - the writer reports an ONLINE replica OFFLINE: OFFLINE (`replica-offline`);
 * - it reports a RESYNCING or REBUILDING one ONLINE: ONLINE (`replica-online`),
 *   and OFFLINE (the copy failed, `replica-offline`) once the report is
 *   recent enough to know of the copy (`reportGraceMs`);
 * - copy progress is kept when it moves by a percent or more;
 * - a replacement ONLINE: the replica it replaces goes RETIRING;
 * - an OFFLINE replica on a lost pool (pool-health.ts `isLostPool`) gets a
 *   replacement (CREATING, `replaces` = its id) on another pool, which
 *   repair.ts makes and moves to REBUILDING; on a GOOD
 *   pool whose lease was taken, RESYNCING (`replica-resync-started`);
 *   otherwise it waits, and its message says for what;
 * - fewer replicas than `spec.replicas`: new CREATING ones; more: the
 *   surplus goes RETIRING, non-ONLINE first, then the least healthy pool;
 * - no ONLINE replica to copy from: the OFFLINE replicas say so, and the
 *   volume gets one `replica-repair-failed` (not one per replica, nor one
 *   per pass: only when none of its replicas said so before).
 */
import type { ControlPlaneEventType } from "../../contract/event.ts";
import type { VolumeReport } from "../../contract/node.ts";
import type { PoolHealth } from "../../contract/pool.ts";
import { MAX_REPLICA_SLOTS, type Replica, type ReplicaState } from "../../contract/volume.ts";
import { ApiError } from "../http/api-error.ts";
import type { NewEvent } from "../registry/events.ts";
import type { PoolRecord } from "../registry/pools.ts";
import { movedReplica } from "../registry/replica-states.ts";
import type { VolumeRecord } from "../registry/volumes.ts";
import { replicaUri } from "../storage/replica-blobs.ts";
import { isLostPool } from "./pool-health.ts";
import type { RepairPolicy } from "./repair-policy.ts";
import { poolsForNewReplicas } from "./replica-placement.ts";

export type RepairEvent = NewEvent & { type: ControlPlaneEventType };

export interface RepairInputs {
  volume: VolumeRecord;
  /** The owner's report of this volume at the volume's current epoch, if it sent one. */
  report: VolumeReport | undefined;
  /** When that report arrived (the node's `lastReportAt`). */
  reportedAt: string | null | undefined;
  pools: ReadonlyMap<string, PoolRecord>;
  /** Replicas per pool across the registry, for placing new ones. */
  load: ReadonlyMap<string, number>;
  /** OFFLINE replicas now leased under the volume's lease id: they may be resynced. */
  leased: ReadonlySet<string>;
  /** Why the lease of an OFFLINE replica could not be taken, by replica id. */
  leaseErrors: ReadonlyMap<string, string>;
  now: Date;
  policy: RepairPolicy;
  newReplicaId: () => string;
}

export interface RepairPlan {
  replicas: Replica[];
  events: RepairEvent[];
  /** Some replica changed state, appeared or went: the writer must be told. */
  statesChanged: boolean;
  /** Anything at all changed (a message or progress alone included). */
  changed: boolean;
}

export const HEALTH_RANK: Record<PoolHealth, number> = { GOOD: 0, UNKNOWN: 1, SUSPECT: 2, BAD: 3 };
const COPYING: readonly ReplicaState[] = ["RESYNCING", "REBUILDING"];
export const NO_SOURCE = "repair failed: no ONLINE replica to copy from";
/** How the message of a replica waiting for its lease starts. */
export const LEASE_WAIT = "waiting: its lease could not be taken: ";

/** OFFLINE replicas that may be resynced now, once their lease is taken. */
export function resyncCandidates(
  volume: VolumeRecord,
  pools: ReadonlyMap<string, PoolRecord>,
  now: Date,
  policy: RepairPolicy,
): Replica[] {
  const replicas = volume.status.replicas;
  if (!replicas.some((r) => r.state === "ONLINE")) return [];
  return replicas.filter((r) => {
    if (r.state !== "OFFLINE" || isReplaced(replicas, r)) return false;
    // Its going OFFLINE was itself a failure reported against the pool: a pool judged GOOD
    // before that report was recorded must not end its wait.
    // A stale one (its writer was lost) was not taken out by a failure of its pool: it need not wait.
    const offlineFor = now.getTime() - (r.since ? Date.parse(r.since) : 0);
    const waited = offlineFor >= policy.suspectWindowMs || r.stale === true;
    const pool = pools.get(r.pool);
    return pool?.health === "GOOD" && waited && !isLostPool(pool, now, policy);
  });
}

export function planRepair(inputs: RepairInputs): RepairPlan {
  const { volume: v, report, now, policy } = inputs;
  const at = now.toISOString();
  const events: RepairEvent[] = [];
  let statesChanged = false;
  const owner = v.status.ownerNode ?? undefined;
  const event = (type: ControlPlaneEventType, r: Replica, message: string, data?: object) =>
    events.push({
      type,
      volume: v.name,
      pool: r.pool,
      ...(owner ? { node: owner } : {}),
      message: `volume ${v.name}: replica ${r.id} on ${r.pool} ${message}`,
      data: { replica: r.id, ...data },
    });
  /** Replicas moved by this plan: their message says why, and stays. */
  const moved = new Set<string>();
  const move = (r: Replica, state: ReplicaState, message?: string): Replica => {
    statesChanged = true;
    moved.add(r.id);
    return movedReplica(r, state, now, message);
  };

  // 1. What the writer reports.
  const reportedAt = inputs.reportedAt ? Date.parse(inputs.reportedAt) : Number.NaN;
  let replicas = v.status.replicas.map((r): Replica => {
    const seen = report?.replicas.find((x) => x.id === r.id);
    if (!seen) return r;
    if (r.state === "ONLINE" && seen.state === "OFFLINE") {
      const why = seen.error ?? "taken offline by its writer";
      // Stale: left behind by the agent's own unclean stop (served-replicas.ts), not by its pool.
      const stale = seen.stale === true;
      event("replica-offline", r, `is OFFLINE: ${why}`, { error: seen.error ?? null, ...(stale ? { stale } : {}) });
      return stale ? { ...move(r, "OFFLINE", why), stale } : move(r, "OFFLINE", why);
    }
    if (!COPYING.includes(r.state)) return r;
    const verb = r.state === "RESYNCING" ? "resync" : "rebuild";
    if (seen.state === "ONLINE") {
      event("replica-online", r, `is ONLINE: ${verb} done`);
      return move(r, "ONLINE");
    }
    const since = r.since ? Date.parse(r.since) : 0;
    if (seen.state === "OFFLINE" && reportedAt >= since + policy.reportGraceMs) {
      const why = `${verb} failed: ${seen.error ?? "the writer took it offline"}`;
      event("replica-offline", r, `is OFFLINE: ${why}`, { error: seen.error ?? null });
      return move(r, "OFFLINE", why);
    }
    if (seen.state === r.state && seen.progress !== undefined) {
      const progress = Math.floor(seen.progress);
      if (r.progress !== undefined && Math.abs(progress - r.progress) < 1) return r;
      const bytes =
        seen.copiedBytes !== undefined && seen.totalBytes !== undefined
          ? ` (${seen.copiedBytes} of ${seen.totalBytes} bytes)`
          : "";
      return { ...r, progress, message: `${verb}: ${progress}%${bytes}` };
    }
    return r;
  });

  // 2. A replacement in sync retires the replica it replaces.
  replicas = replicas.map((r) => {
    const replacement = replicas.find((o) => o.replaces === r.id && o.state === "ONLINE");
    if (!replacement || r.state === "RETIRING") return r;
    return move(r, "RETIRING", `replaced by ${replacement.id} on ${replacement.pool}`);
  });

  const hasSource = replicas.some((r) => r.state === "ONLINE");
  const newReplica = (pool: PoolRecord, replaces?: string): Replica => {
    const id = inputs.newReplicaId();
    statesChanged = true;
    return {
      id,
      pool: pool.name,
      uri: replicaUri(pool, v.name, id),
      state: "CREATING",
      since: at,
      message: replaces ? `creating its blob, to replace ${replaces}` : "creating its blob",
      ...(replaces ? { replaces } : {}),
    };
  };
  const place = (count: number, current: Replica[]): PoolRecord[] => {
    const room = MAX_REPLICA_SLOTS - current.length;
    if (room <= 0) return [];
    try {
      return poolsForNewReplicas(
        { ...v, status: { ...v.status, replicas: current } },
        Math.min(count, room),
        [...inputs.pools.values()],
        inputs.load,
      );
    } catch (err) {
      // Fewer pools than asked: take what there is, one at a time.
      if (!(err instanceof ApiError) || count <= 1) {
        if (err instanceof ApiError) return [];
        throw err;
      }
      return place(count - 1, current);
    }
  };
  const withMessage = (r: Replica, message: string, failed = false): Replica => {
    if (r.message === message) return r;
    if (failed) event("replica-repair-failed", r, message);
    return { ...r, message };
  };

  // 3. OFFLINE replicas: resync, rebuild, or wait.
  const added: Replica[] = [];
  replicas = replicas.map((r) => {
    if (r.state !== "OFFLINE" || isReplaced(replicas, r) || moved.has(r.id)) return r;
    if (!hasSource) return withMessage(r, NO_SOURCE);
    const pool = inputs.pools.get(r.pool);
    if (isLostPool(pool, now, policy)) {
      const [target] = place(1, [...replicas, ...added]);
      if (!target) return withMessage(r, "repair failed: no other pool can take its replacement", true);
      const replacement = newReplica(target, r.id);
      added.push(replacement);
      return { ...r, message: `being replaced by ${replacement.id} on ${replacement.pool}` };
    }
    if (inputs.leased.has(r.id)) {
      event("replica-resync-started", r, "is being resynced from an ONLINE replica");
      return move(r, "RESYNCING", "resync ordered");
    }
    const leaseError = inputs.leaseErrors.get(r.id);
    if (leaseError) return withMessage(r, `${LEASE_WAIT}${leaseError}`);
    const health = pool?.health ?? "unknown";
    return withMessage(
      r,
      health === "GOOD"
        ? `waiting: pool ${r.pool} answers again; a resync starts when no failure was reported for ${policy.suspectWindowMs / 1000} s`
        : `waiting: pool ${r.pool} is ${health}`,
    );
  });
  replicas = [...replicas, ...added];
  // The volume as a whole has nothing to copy from: one event for it, when its replicas first say so.
  const stranded = replicas.filter((r) => r.message === NO_SOURCE);
  if (stranded.length > 0 && !v.status.replicas.some((r) => r.message === NO_SOURCE)) {
    events.push({
      type: "replica-repair-failed",
      volume: v.name,
      ...(owner ? { node: owner } : {}),
      message: `volume ${v.name}: ${NO_SOURCE}; ${stranded.map((r) => `${r.id} on ${r.pool}`).join(", ")} cannot be repaired`,
      data: { replicas: stranded.map((r) => r.id) },
    });
  }

  // 4. The replica count.
  const members = countMembers(replicas);
  if (members.length < v.spec.replicas && hasSource) {
    for (const pool of place(v.spec.replicas - members.length, replicas)) {
      replicas.push(newReplica(pool));
    }
  } else if (members.length > v.spec.replicas) {
    const retire = surplus(members, v.spec.replicas, inputs.pools);
    replicas = replicas.map((r) => {
      const why = retire.has(r.id)
        ? "the replica count was lowered"
        : r.replaces && retire.has(r.replaces)
          ? `the replica it was to replace (${r.replaces}) is retired`
          : undefined;
      return why && r.state !== "RETIRING" ? move(r, "RETIRING", why) : r;
    });
  }

  const changed = JSON.stringify(replicas) !== JSON.stringify(v.status.replicas);
  return { replicas, events, statesChanged, changed };
}

/** Whether a replacement for `r` is on its way (one not itself retiring). */
export function isReplaced(replicas: readonly Replica[], r: Replica): boolean {
  return replicas.some((o) => o.replaces === r.id && o.state !== "RETIRING");
}

/**
 * The replicas that count toward `spec.replicas`: every one not RETIRING,
 * except a replacement while the replica it replaces is still there (the
 * two stand for one).
 */
export function countMembers(replicas: readonly Replica[]): Replica[] {
  const staying = replicas.filter((r) => r.state !== "RETIRING");
  return staying.filter((r) => !(r.replaces && staying.some((o) => o.id === r.replaces)));
}

/** Which members to retire to keep `keep`: non-ONLINE first, then the least healthy pool; one ONLINE stays. */
function surplus(
  members: readonly Replica[],
  keep: number,
  pools: ReadonlyMap<string, PoolRecord>,
): Set<string> {
  const rank = (r: Replica) => HEALTH_RANK[pools.get(r.pool)?.health ?? "BAD"];
  const order = [...members].sort(
    (a, b) =>
      Number(a.state === "ONLINE") - Number(b.state === "ONLINE") ||
      rank(b) - rank(a) ||
      a.id.localeCompare(b.id),
  );
  const retire = new Set<string>();
  for (const r of order) {
    if (members.length - retire.size <= keep) break;
    const onlineLeft = members.filter((m) => m.state === "ONLINE" && !retire.has(m.id));
    if (r.state === "ONLINE" && onlineLeft.length <= 1) continue;
    retire.add(r.id);
  }
  return retire;
}
