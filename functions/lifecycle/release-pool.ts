/**
 * Releasing a pool (`POST /pools/{name}/release`, or the `action=remove`
 * annotation) and putting it back to use (`action=add`). The usage moves
 * here; the replicas are moved by the replacement pass
 * (health/replacement.ts), which this runs once at once for the pool, so
 * that the answer already shows the moves started (and an empty pool
 * RELEASED).
 *
 * A release starts from IN_USE (a fresh one) or FAILED (the same release
 * retried: what has moved stays listed). Releasing a pool that is
 * RELEASING or RELEASED already changes nothing. A pool put back IN_USE
 * keeps its last release on view, marked stopped; the moves already
 * started finish anyway (a replica built is not thrown away).
 */
import type { PoolRelease } from "../../contract/pool.ts";
import type { ControlPlane } from "../control-plane.ts";
import { advanceRelease, type ReplacementReport } from "../health/replacement.ts";
import { ApiError } from "../http/api-error.ts";
import { poolUsageStates } from "../registry/pool-usage-states.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { TransitionRefused } from "../registry/state-machine.ts";
import { volumes } from "../registry/volumes.ts";
import { note } from "./note.ts";

const NO_COUNTS: PoolRelease["counts"] = { PENDING: 0, MOVING: 0, WAITING: 0, MOVED: 0, FAILED: 0 };

/**
 * `pool` releasing, or undefined when it is RELEASING or RELEASED already.
 * Throws `TransitionRefused` from REMOVING or REMOVED.
 */
export function releasing(pool: PoolRecord, now: Date): PoolRecord | undefined {
  if (pool.usage === "RELEASING" || pool.usage === "RELEASED") return undefined;
  poolUsageStates.check(pool.usage, "RELEASING");
  const at = now.toISOString();
  const retried = pool.usage === "FAILED" && pool.release;
  const release: PoolRelease = retried
    ? { ...withoutFinish(retried), message: "releasing: retried" }
    : {
        startedAt: at,
        progress: 0,
        message: "releasing: starting",
        counts: NO_COUNTS,
        entries: [],
        omitted: 0,
      };
  return { ...pool, usage: "RELEASING", release, updatedAt: at };
}

/**
 * `pool` back IN_USE, or undefined when it is IN_USE already. Only a
 * RELEASING, RELEASED or FAILED pool goes back (a REMOVING one is being
 * forgotten: `TransitionRefused`).
 */
export function backInUse(pool: PoolRecord, now: Date): PoolRecord | undefined {
  if (pool.usage === "IN_USE") return undefined;
  if (!["RELEASING", "RELEASED", "FAILED"].includes(pool.usage))
    throw new TransitionRefused(poolUsageStates.name, pool.usage, "IN_USE");
  poolUsageStates.check(pool.usage, "IN_USE");
  const at = now.toISOString();
  const release = pool.release && {
    ...pool.release,
    finishedAt: pool.release.finishedAt ?? at,
    stoppedAt: at,
    message: `stopped: back IN_USE (was ${pool.usage}); ${pool.release.message}`.slice(0, 1024),
  };
  return { ...pool, usage: "IN_USE", ...(release ? { release } : {}), updatedAt: at };
}

function withoutFinish(release: PoolRelease): PoolRelease {
  const { finishedAt: _finishedAt, ...rest } = release;
  return rest;
}

/**
 * `POST /pools/{name}/release`: the pool as it stands after its first pass
 * (usage REMOVED if that removed it: empty, and annotated `removal=ready`).
 */
export async function releasePool(cp: ControlPlane, name: string): Promise<PoolRecord> {
  const read = await retryOnConflict(async () => {
    const current = await readPool(cp, name);
    const next = releasing(current.value, cp.now());
    if (!next) return current;
    const etag = await pools(cp.registry).replace(next, current.etag);
    await noteUsage(cp, current.value, next, "release requested");
    return { value: next, etag };
  });
  return (await advanceNow(cp, read))?.value ?? { ...read.value, usage: "REMOVED" };
}

/** The pool named `name`, or `PoolNotFound`. */
export async function readPool(cp: ControlPlane, name: string): Promise<Read<PoolRecord>> {
  const read = await pools(cp.registry).get(name);
  if (!read) throw new ApiError("PoolNotFound", `no pool named ${name}`, { pool: name });
  return read;
}

/** Record a usage change made by a request. */
export async function noteUsage(
  cp: ControlPlane,
  before: PoolRecord,
  after: PoolRecord,
  why: string,
): Promise<void> {
  if (before.usage === after.usage) return;
  await note(cp, {
    type: "pool-usage-changed",
    pool: after.name,
    message: `pool ${after.name}: ${before.usage} -> ${after.usage}: ${why}`,
    data: { from: before.usage, to: after.usage },
  });
}

/**
 * One replacement pass for this pool right away, when it has something to
 * do. A conflict leaves it to the sweeper's next pass: the release is
 * recorded already, and the answer shows it as it was written.
 */
export async function advanceNow(
  cp: ControlPlane,
  read: Read<PoolRecord>,
): Promise<Read<PoolRecord> | undefined> {
  const pool = read.value;
  const due =
    pool.usage === "RELEASING" ||
    (pool.usage === "RELEASED" && pool.annotations.removal === "ready");
  if (!due) return read;
  const report: ReplacementReport = { released: [], failed: [], removed: [] };
  try {
    const all = (await volumes(cp.registry).list()).map((v) => v.value);
    return await advanceRelease(cp, read, all, report);
  } catch (err) {
    if (!isRegistryError(err, "Conflict")) throw err;
    return (await pools(cp.registry).get(pool.name)) ?? undefined;
  }
}
