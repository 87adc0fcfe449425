/**
 * Deleting orphans, the only path that ever does, and only when asked.
 *
 * The pool is listed and the records read again (in that order, as in
 * reconcile-blobs.ts), so what was an orphan when reported is checked to
 * still be one. Blobs are named by their path, `<container>/<blob name>`.
 * Named blobs are all checked before any is deleted: if one is claimed,
 * recent, or leased without `breakLeases`, the request is refused
 * (`NotAnOrphan`) and nothing is deleted. With `all: true`, every orphan of
 * the pool is taken except those, which are skipped. Each delete is
 * conditional on what was checked, so a blob written since stays.
 *
 * Empty replica containers are leftovers too: one no record claims is an
 * orphan named `<container>/`, and deleting the last blob of such a
 * container deletes the container with it.
 */
import type {
  OrphanDeleteRequest,
  OrphanDeleteResult,
  OrphanRefusal,
} from "../../contract/reconciliation.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { invalidInput } from "../http/input.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { volumes } from "../registry/volumes.ts";
import {
  blobPath,
  deleteCheckedBlob,
  deleteEmptyReplicaContainer,
  isEmptyContainer,
  listPoolBlobs,
  type PoolBlob,
} from "../storage/pool-blobs.ts";
import { isReplicaContainer, replicaContainerName } from "../storage/replica-container.ts";
import { StorageFailure } from "../storage/storage-failure.ts";
import { note } from "./note.ts";
import { claimedBlobs, claimKey, poolNamed } from "./reconcile-blobs.ts";

/** Deletes in flight at once: enough to finish a large cleanup, few enough not to be throttled. */
const PARALLEL_DELETES = 8;
/** Names listed in the `orphans-deleted` event; the count covers the rest. */
const NAMES_IN_EVENT = 50;

type Result = OrphanDeleteResult["results"][number];

/** A blob checked to be a deletable orphan. */
interface Target {
  blob: PoolBlob;
  breakLease: boolean;
}

export async function deleteOrphans(
  cp: ControlPlane,
  request: OrphanDeleteRequest,
  graceMs: number,
): Promise<OrphanDeleteResult> {
  const registered = (await pools(cp.registry).list()).map((p) => p.value);
  const pool = poolNamed(registered, request.pool);
  request.blobs?.forEach((name, i) => {
    const refusal = pathRefusal(pool, name);
    if (refusal) throw invalidInput(`body.blobs.${i}`, refusal);
  });
  // A pool that cannot be listed cannot be checked: StorageFailed, nothing deleted.
  const blobs = await listPoolBlobs(pool);
  const claims = claimedBlobs(
    (await volumes(cp.registry).list()).map((r) => r.value),
    registered,
  );
  const now = cp.now().getTime();

  const refusalOf = (blob: PoolBlob): Exclude<OrphanRefusal, "not-empty"> | undefined => {
    if (claims.has(claimKey(pool.name, blob.name))) return "claimed";
    if (now - blob.lastModified.getTime() < graceMs) return "recent";
    if (isLeased(blob) && !request.breakLeases) return "leased";
    return undefined;
  };

  const results: Result[] = [];
  const targets: Target[] = [];
  const byName = new Map(blobs.map((b) => [b.name, b]));
  if (request.blobs) {
    const holding = new Set(blobs.map((b) => blobPath(b.container, "")));
    const refused: Array<{ name: string; reason: OrphanRefusal }> = [];
    for (const name of request.blobs) {
      const blob = byName.get(name);
      if (!blob && holding.has(name)) {
        // A container named `<container>/` that still holds blobs.
        const claimed = claims.has(claimKey(pool.name, name));
        refused.push({ name, reason: claimed ? "claimed" : "not-empty" });
        continue;
      }
      if (!blob) {
        results.push({ name, outcome: "gone" });
        continue;
      }
      const reason = refusalOf(blob);
      if (reason) refused.push({ name, reason });
      else targets.push({ blob, breakLease: isLeased(blob) });
    }
    if (refused.length > 0) throw notAnOrphan(pool.name, refused);
  } else {
    for (const blob of blobs) {
      const reason = refusalOf(blob);
      if (reason === "claimed") continue;
      if (reason) results.push({ name: blob.name, outcome: "skipped", message: SKIPPED[reason] });
      else targets.push({ blob, breakLease: isLeased(blob) });
    }
  }

  // A replica container goes with its last blob, unless a record claims it.
  const removable = (blob: PoolBlob) =>
    !isEmptyContainer(blob) &&
    isReplicaContainer(pool.container, blob.container) &&
    !claims.has(claimKey(pool.name, blobPath(blob.container, "")));
  for (let i = 0; i < targets.length; i += PARALLEL_DELETES) {
    const batch = targets.slice(i, i + PARALLEL_DELETES);
    results.push(
      ...(await Promise.all(batch.map((t) => deleteTarget(pool, t, removable(t.blob))))),
    );
  }

  const deleted = results.filter((r) => r.outcome === "deleted");
  if (deleted.length > 0) {
    await note(cp, {
      type: "orphans-deleted",
      pool: pool.name,
      message: `${deleted.length} orphan blob(s) deleted from pool ${pool.name}`,
      data: {
        count: deleted.length,
        blobs: deleted.slice(0, NAMES_IN_EVENT).map((r) => r.name),
        leasesBroken: deleted.filter((r) => r.leaseBroken).length,
      },
    });
  }
  return { pool: pool.name, results };
}

const SKIPPED: Record<Exclude<OrphanRefusal, "claimed" | "not-empty">, string> = {
  recent: "modified within the grace period: it may be a volume being created",
  leased: "leased: give breakLeases to delete it",
};

function isLeased(blob: PoolBlob): boolean {
  return blob.leaseState === "leased" || blob.leaseState === "breaking";
}

/**
 * Why `name` is not a path this pool's orphans may have: it must be a blob
 * of the pool's own container, or a blob or the path (`<container>/`) of
 * one of its replica containers. The pool's own container is never deleted.
 */
function pathRefusal(pool: PoolRecord, name: string): string | undefined {
  const container = name.slice(0, name.indexOf("/"));
  if (container === pool.container) {
    if (name === blobPath(container, ""))
      return `${name} is pool ${pool.name}'s own container, which is never deleted`;
    return undefined;
  }
  if (isReplicaContainer(pool.container, container)) return undefined;
  const replicas = replicaContainerName(pool.container, "<replica id>");
  return `${name} is not in pool ${pool.name}: its blobs are in ${pool.container} and ${replicas}`;
}

/**
 * Delete one checked target; then, when `container` says so, its replica
 * container if that holds no blob any more. The blob's outcome stands
 * whatever becomes of its container: a container left is listed next time.
 */
async function deleteTarget(
  pool: PoolRecord,
  { blob, breakLease }: Target,
  container: boolean,
): Promise<Result> {
  let result: Result;
  try {
    const done = await deleteCheckedBlob(pool, blob, breakLease);
    if (done === "changed") {
      return {
        name: blob.name,
        outcome: "failed",
        message: "modified since it was checked; left alone (list again)",
      };
    }
    result = {
      name: blob.name,
      outcome: done,
      ...(done === "deleted" && breakLease ? { leaseBroken: true } : {}),
    };
  } catch (err) {
    if (!(err instanceof StorageFailure)) throw err;
    return { name: blob.name, outcome: "failed", message: err.message };
  }
  if (!container || result.outcome !== "deleted") return result;
  try {
    if (await deleteEmptyReplicaContainer(pool, blob.container))
      return { ...result, containerDeleted: true };
    return result;
  } catch (err) {
    if (!(err instanceof StorageFailure)) throw err;
    return {
      ...result,
      message: `its container ${blob.container} is left, empty, as an orphan: ${err.message}`,
    };
  }
}

function notAnOrphan(
  pool: string,
  refused: ReadonlyArray<{ name: string; reason: OrphanRefusal }>,
): ApiError {
  const first = refused[0]!;
  const more = refused.length > 1 ? ` and ${refused.length - 1} more` : "";
  return new ApiError(
    "NotAnOrphan",
    `nothing deleted: blob ${first.name} in pool ${pool} is ${REFUSED[first.reason]}${more}`,
    { pool, blobs: refused },
  );
}

const REFUSED: Record<OrphanRefusal, string> = {
  claimed: "claimed by a volume",
  recent: "recent (modified within the grace period)",
  leased: "leased (give breakLeases to delete it)",
  "not-empty": "a container that holds blobs (it goes with the last of them)",
};
