/**
 * `DELETE /pools/{name}`: forget a pool that holds no replica, IN_USE or
 * RELEASED (the replacement pass calls it too, for a RELEASED pool
 * annotated `removal=ready`). Its containers and any blobs in them are left
 * alone (orphans are only ever deleted on explicit request).
 *
 * A refused removal writes nothing. Otherwise the pool is marked REMOVING
 * first and the replicas are looked for again: volume creation writes its
 * replicas before checking the pool, so a creation racing this removal is
 * seen by one side or the other, and the pool goes back as it was.
 */
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { poolUsageStates } from "../registry/pool-usage-states.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { volumes } from "../registry/volumes.ts";
import { note } from "./note.ts";

/** At most this many volume names in a `PoolInUse` error. */
const NAMED_VOLUMES = 100;

export async function removePool(cp: ControlPlane, name: string): Promise<void> {
  const table = pools(cp.registry);
  const marked = await retryOnConflict(async () => {
    const read = await table.get(name);
    if (!read) throw new ApiError("PoolNotFound", `no pool named ${name}`, { pool: name });
    // REMOVING already: a removal that crashed half-way, resumed here; a
    // pool whose release was not stopped came from RELEASED.
    if (read.value.usage === "REMOVING") {
      const { release } = read.value;
      const usage = release && !release.stoppedAt ? ("RELEASED" as const) : ("IN_USE" as const);
      return { read, before: { ...read.value, usage } };
    }
    await refuseIfHoldingReplicas(cp, name);
    poolUsageStates.check(read.value.usage, "REMOVING");
    const next: PoolRecord = {
      ...read.value,
      usage: "REMOVING",
      updatedAt: cp.now().toISOString(),
    };
    return {
      read: { value: next, etag: await table.replace(next, read.etag) },
      before: read.value,
    };
  });

  try {
    await refuseIfHoldingReplicas(cp, name);
  } catch (err) {
    await restore(cp, marked.read, marked.before);
    throw err;
  }
  poolUsageStates.check("REMOVING", "REMOVED");
  await table.remove(name, marked.read.etag);
  await note(cp, { type: "pool-removed", pool: name, message: `pool ${name} removed` });
}

async function refuseIfHoldingReplicas(cp: ControlPlane, pool: string): Promise<void> {
  const holders = (await volumes(cp.registry).list())
    .filter((v) => v.value.status.replicas.some((r) => r.pool === pool))
    .map((v) => v.value.name);
  if (holders.length > 0) {
    throw new ApiError("PoolInUse", `pool ${pool} holds replicas of ${holders.length} volume(s)`, {
      volumes: holders.slice(0, NAMED_VOLUMES),
    });
  }
}

/** Put the pool back as it was before this removal marked it. */
async function restore(
  cp: ControlPlane,
  marked: Read<PoolRecord>,
  before: PoolRecord,
): Promise<void> {
  poolUsageStates.check("REMOVING", before.usage);
  await pools(cp.registry).replace(before, marked.etag);
}
