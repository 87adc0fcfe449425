/**
 * The replacement pass: moves the replicas off pools being released and
 * records where each one stands in the pool's `release` (DESIGN.md,
 * "Health, repair, replacement"; after Dell's drive replacement).
 *
 * For a RELEASING pool, each pass looks at every replica on it, over all
 * volumes (the record is the state, so an interrupted pass is simply run
 * again):
 *
 * - one already being replaced (a replica with `replaces` = its id) is
 *   MOVING, or WAITING while its volume's writer is changing (attaching,
 *   detaching, fenced); the repair pass (repair.ts, repair-detached.ts for
 *   a detached volume) carries the copy and retires the old replica;
 * - one not yet replaced is moved with `moveReplica` unless that is
 *   impossible: no ONLINE replica to copy from (the replica itself is not
 *   ONLINE and no other is), or the pool is BAD (computed or annotated)
 *   and no other replica is ONLINE. A 1-replica volume on a pool that
 *   still answers IS moved: its writer rebuilds from that very replica;
 * - no pool to take it (`InsufficientPools`) fails it too;
 * - one gone from the pool since the last pass is MOVED.
 *
 * After the pass over its replicas the pool is FAILED if any replica
 * cannot be moved (the moves already started go on, and are still shown),
 * RELEASED once none is left on it, and with the `removal=ready`
 * annotation a RELEASED pool is then removed (REMOVING -> REMOVED, the row
 * deleted, the container left alone). A removal interrupted at REMOVING is
 * finished the same way; one that finds a replica on the pool (a creation
 * racing it) puts the pool back RELEASED and is tried again next pass.
 *
 * The pool row is written (ETag-conditional) only when its release or
 * usage changes: progress is copied from the replica records, which are
 * themselves written only on whole-percent moves.
 */
import {
  MAX_RELEASE_ENTRIES,
  type PoolRelease,
  RELEASE_STATUSES,
  type ReleaseEntry,
  type ReleaseStatus,
} from "../../contract/pool.ts";
import type { Replica } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { note } from "../lifecycle/note.ts";
import { removePool } from "../lifecycle/remove-pool.ts";
import { poolUsageStates } from "../registry/pool-usage-states.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import type { Read } from "../registry/rows.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import { moveReplica } from "./repair.ts";

/** What a move waits for while its volume is neither ATTACHED nor DETACHED. */
export const WAITING_MESSAGE =
  "waiting: the volume's writer is changing (attach, detach or failover); the move goes on after";

/** Messages kept per entry, so that `MAX_RELEASE_ENTRIES` of them fit one row property. */
const MAX_ENTRY_MESSAGE = 120;

/** What one pass did, by pool name. */
export interface ReplacementReport {
  /** Pools whose release became RELEASED. */
  released: string[];
  /** Pools whose release became FAILED. */
  failed: string[];
  /** Pools removed (RELEASED with `removal=ready`). */
  removed: string[];
}

/**
 * One pass over every pool with a release to advance. A cluster with none
 * costs one query (the pool list); volumes are listed only when needed.
 */
export async function advanceReleases(cp: ControlPlane): Promise<ReplacementReport> {
  const report: ReplacementReport = { released: [], failed: [], removed: [] };
  const due = (await pools(cp.registry).list()).filter((p) => hasWork(p.value));
  if (due.length === 0) return report;
  const all = (await volumes(cp.registry).list()).map((v) => v.value);
  for (const read of due) {
    try {
      await advanceRelease(cp, read, all, report);
    } catch (err) {
      // A conflict is a request or another pass getting there first: next pass.
      if (!isRegistryError(err, "Conflict")) cp.report(err);
    }
  }
  return report;
}

/** Whether a pass has anything to do for `pool`. */
function hasWork(pool: PoolRecord): boolean {
  const ready = pool.annotations.removal === "ready";
  switch (pool.usage) {
    case "RELEASING":
      return true;
    case "RELEASED":
    case "REMOVING":
      // REMOVING with the annotation: a removal by this pass that was interrupted.
      return ready;
    case "FAILED": {
      // Moves started before the release failed go on: keep their progress shown.
      const counts = pool.release?.counts;
      return counts !== undefined && counts.MOVING + counts.WAITING > 0;
    }
    default:
      return false;
  }
}

/**
 * Advance the release of one pool against `all` volumes as just read;
 * returns the pool as written, or undefined once it is removed.
 */
export async function advanceRelease(
  cp: ControlPlane,
  read: Read<PoolRecord>,
  all: readonly VolumeRecord[],
  report: ReplacementReport,
): Promise<Read<PoolRecord> | undefined> {
  const pool = read.value;
  if (pool.usage === "RELEASED" || pool.usage === "REMOVING") {
    if (pool.annotations.removal !== "ready") return read;
    // A replica on a RELEASED pool is a creation racing its release, soon rolled back: wait
    // for it without writing. A REMOVING one goes back to RELEASED by the removal itself.
    const holding = all.some((v) => v.status.replicas.some((r) => r.pool === pool.name));
    if (holding && pool.usage === "RELEASED") return read;
    return remove(cp, pool.name, report);
  }
  if (pool.usage !== "RELEASING" && pool.usage !== "FAILED") return read;

  const before = pool.release;
  const previous = new Map((before?.entries ?? []).map((e) => [keyOf(e), e]));
  const startMoves = pool.usage === "RELEASING";
  const byName = new Map(all.map((v) => [v.name, v]));
  const entries: ReleaseEntry[] = [];
  for (const v of all) {
    for (const r of v.status.replicas) {
      if (r.pool !== pool.name) continue;
      const prev = previous.get(keyOf({ volume: v.name, replica: r.id }));
      previous.delete(keyOf({ volume: v.name, replica: r.id }));
      entries.push(bounded(await entryOf(cp, pool, v, r, prev, startMoves)));
    }
  }
  // What was on the pool and is not any more has moved (or its volume is gone).
  for (const gone of previous.values()) entries.push(bounded(moved(gone, byName.get(gone.volume))));

  const listedMoved = before?.entries.filter((e) => e.status === "MOVED").length ?? 0;
  const unlistedMoved = (before?.counts.MOVED ?? 0) - listedMoved;
  const counts = countOf(entries, unlistedMoved);
  const live = entries.length - counts.MOVED + unlistedMoved;

  let usage: PoolRecord["usage"] = pool.usage;
  if (usage === "RELEASING") {
    if (counts.FAILED > 0) usage = "FAILED";
    else if (live === 0) usage = "RELEASED";
  }
  const finished = usage !== pool.usage;
  const kept = keep(entries);
  const release: PoolRelease = {
    startedAt: before?.startedAt ?? cp.now().toISOString(),
    ...(finished
      ? { finishedAt: cp.now().toISOString() }
      : before?.finishedAt
        ? { finishedAt: before.finishedAt }
        : {}),
    progress: progressOf(entries, unlistedMoved),
    message: messageOf(usage, counts),
    counts,
    entries: kept,
    omitted: entries.length - kept.length + unlistedMoved,
  };
  if (!finished && JSON.stringify(release) === JSON.stringify(before)) return read;

  if (finished) poolUsageStates.check(pool.usage, usage);
  const next: PoolRecord = { ...pool, usage, release, updatedAt: cp.now().toISOString() };
  const written: Read<PoolRecord> = {
    value: next,
    etag: await pools(cp.registry).replace(next, read.etag),
  };
  await noteProgress(cp, pool.name, before, release);
  if (finished) {
    (usage === "RELEASED" ? report.released : report.failed).push(pool.name);
    await note(cp, {
      type: "pool-usage-changed",
      pool: pool.name,
      message: `pool ${pool.name}: ${pool.usage} -> ${usage}: ${release.message}`,
      data: { from: pool.usage, to: usage },
    });
    if (usage === "RELEASED" && pool.annotations.removal === "ready")
      return remove(cp, pool.name, report);
  }
  return written;
}

/** Where replica `r` of `v` on `pool` stands; starts its move when allowed. */
async function entryOf(
  cp: ControlPlane,
  pool: PoolRecord,
  v: VolumeRecord,
  r: Replica,
  prev: ReleaseEntry | undefined,
  startMoves: boolean,
): Promise<ReleaseEntry> {
  const entry = (status: ReleaseStatus, progress: number, message?: string): ReleaseEntry => ({
    volume: v.name,
    replica: r.id,
    status,
    progress,
    ...(message === undefined ? {} : { message }),
  });
  if (r.state === "RETIRING") return entry("MOVING", 100, "replaced; retiring this replica");
  const successor = successorOf(v, r.id);
  if (successor) return following(v, r, successor);
  if (!startMoves) return prev ?? entry("PENDING", 0, "not started: the release is FAILED");

  const problem = unmovable(pool, v, r);
  if (problem) return entry("FAILED", 0, problem);
  try {
    const after = await moveReplica(cp, v.name, r.id, `pool ${pool.name} is being released`);
    const started = successorOf(after, r.id);
    return started ? following(after, r, started) : entry("PENDING", 0, "move requested");
  } catch (err) {
    if (err instanceof ApiError && err.code === "InsufficientPools")
      return entry("FAILED", 0, `no pool can take it: ${err.message}`);
    if (err instanceof ApiError) return entry("PENDING", 0, `not started yet: ${err.message}`);
    if (isRegistryError(err, "Conflict"))
      return entry("PENDING", 0, "not started yet: the volume changed meanwhile");
    cp.report(err);
    return entry("PENDING", 0, "not started yet: internal error, retried next pass");
  }
}

/** Why `r` cannot be moved off `pool`, or undefined when it can. */
function unmovable(pool: PoolRecord, v: VolumeRecord, r: Replica): string | undefined {
  const otherOnline = v.status.replicas.some((x) => x.id !== r.id && x.state === "ONLINE");
  if (otherOnline) return undefined;
  if (r.state !== "ONLINE")
    return `no ONLINE replica to copy from: this one is ${r.state} and the volume has no other`;
  if (pool.health === "BAD" || pool.annotations.health === "bad")
    return `pool ${pool.name} is BAD and the volume has no other ONLINE replica to rebuild from`;
  // The pool still answers: the writer rebuilds from this very replica.
  return undefined;
}

/** The replica being built to take `id`'s place, if any. */
function successorOf(v: VolumeRecord, id: string): Replica | undefined {
  return v.status.replicas.find((x) => x.replaces === id && x.state !== "RETIRING");
}

/** The entry of `r` while `successor` is being built to replace it. */
function following(v: VolumeRecord, r: Replica, successor: Replica): ReleaseEntry {
  const base = { volume: v.name, replica: r.id };
  if (successor.state === "ONLINE") {
    return {
      ...base,
      status: "MOVING",
      progress: 100,
      message: `replaced by ${successor.id} on pool ${successor.pool}; retiring this replica`,
    };
  }
  const progress = Math.max(0, Math.min(100, successor.progress ?? 0));
  if (v.status.state !== "ATTACHED" && v.status.state !== "DETACHED")
    return { ...base, status: "WAITING", progress, message: WAITING_MESSAGE };
  return {
    ...base,
    status: "MOVING",
    progress,
    message: successor.message ?? `rebuilding as ${successor.id} on pool ${successor.pool}`,
  };
}

/** The entry of a replica no longer on the pool. */
function moved(prev: ReleaseEntry, v: VolumeRecord | undefined): ReleaseEntry {
  if (prev.status === "MOVED") return prev;
  const successor = v?.status.replicas.find((x) => x.replaces === prev.replica);
  return {
    volume: prev.volume,
    replica: prev.replica,
    status: "MOVED",
    progress: 100,
    message: !v
      ? "volume deleted"
      : successor
        ? `moved to pool ${successor.pool} as ${successor.id}`
        : "no longer on this pool",
  };
}

function keyOf(e: Pick<ReleaseEntry, "volume" | "replica">): string {
  return `${e.volume}/${e.replica}`;
}

function bounded(e: ReleaseEntry): ReleaseEntry {
  if (e.message === undefined || e.message.length <= MAX_ENTRY_MESSAGE) return e;
  return { ...e, message: `${e.message.slice(0, MAX_ENTRY_MESSAGE - 3)}...` };
}

function countOf(entries: readonly ReleaseEntry[], unlistedMoved: number): PoolRelease["counts"] {
  const counts = Object.fromEntries(RELEASE_STATUSES.map((s) => [s, 0])) as PoolRelease["counts"];
  for (const e of entries) counts[e.status]++;
  counts.MOVED += unlistedMoved;
  return counts;
}

/** Every replica's progress, MOVED ones (listed or not) at 100; 100 for an empty pool. */
function progressOf(entries: readonly ReleaseEntry[], unlistedMoved: number): number {
  const total = entries.length + unlistedMoved;
  if (total === 0) return 100;
  const sum = entries.reduce((s, e) => s + e.progress, 0) + 100 * unlistedMoved;
  return Math.floor(sum / total);
}

/** The entries the row keeps: those still on the pool first, then the MOVED ones. */
function keep(entries: readonly ReleaseEntry[]): ReleaseEntry[] {
  const rank: Record<ReleaseStatus, number> = {
    FAILED: 0,
    MOVING: 1,
    WAITING: 2,
    PENDING: 3,
    MOVED: 4,
  };
  return [...entries]
    .sort(
      (a, b) =>
        rank[a.status] - rank[b.status] ||
        a.volume.localeCompare(b.volume) ||
        a.replica.localeCompare(b.replica),
    )
    .slice(0, MAX_RELEASE_ENTRIES);
}

function messageOf(usage: PoolRecord["usage"], c: PoolRelease["counts"]): string {
  const total = RELEASE_STATUSES.reduce((s, k) => s + c[k], 0);
  const parts = [`${c.MOVED} of ${total} replica(s) moved`];
  if (c.MOVING > 0) parts.push(`${c.MOVING} moving`);
  if (c.WAITING > 0) parts.push(`${c.WAITING} waiting for their volume's writer to change`);
  if (c.PENDING > 0) parts.push(`${c.PENDING} pending`);
  if (c.FAILED > 0) parts.push(`${c.FAILED} cannot be moved`);
  const head =
    usage === "RELEASED"
      ? "released"
      : usage === "FAILED"
        ? "release failed"
        : usage === "RELEASING"
          ? "releasing"
          : `release stopped (${usage})`;
  return `${head}: ${parts.join(", ")}`;
}

/** One `pool-release-progress` event per replica that became MOVED or FAILED. */
async function noteProgress(
  cp: ControlPlane,
  pool: string,
  before: PoolRelease | undefined,
  after: PoolRelease,
): Promise<void> {
  const was = new Map((before?.entries ?? []).map((e) => [keyOf(e), e.status]));
  for (const e of after.entries) {
    if ((e.status !== "MOVED" && e.status !== "FAILED") || was.get(keyOf(e)) === e.status)
      continue;
    await note(cp, {
      type: "pool-release-progress",
      pool,
      volume: e.volume,
      message: `pool ${pool}: replica ${e.replica} of ${e.volume} ${e.status}${e.message ? `: ${e.message}` : ""} (${after.progress}% released)`,
      data: { replica: e.replica, status: e.status, progress: after.progress },
    });
  }
}

/**
 * Remove a RELEASED (or half-removed) pool; undefined once it is gone. A
 * replica found on it after all puts it back as it was (remove-pool.ts),
 * and the pool is returned as it now stands, for the next pass to retry.
 */
async function remove(
  cp: ControlPlane,
  name: string,
  report: ReplacementReport,
): Promise<Read<PoolRecord> | undefined> {
  try {
    await removePool(cp, name);
  } catch (err) {
    if (!(err instanceof ApiError && err.code === "PoolInUse")) throw err;
    return pools(cp.registry).get(name);
  }
  report.removed.push(name);
  return undefined;
}
