/**
 * Where a new volume's replicas go: distinct pools, each taking new
 * replicas (usage IN_USE, health not BAD), healthiest first, then the least
 * loaded, then by name so that the choice is deterministic.
 */
import type { PoolHealth } from "../../contract/pool.ts";
import type { VolumeSpec } from "../../contract/volume.ts";
import { ApiError } from "../http/api-error.ts";
import type { PoolRecord } from "../registry/pools.ts";
import type { VolumeRecord } from "../registry/volumes.ts";

const HEALTH_RANK: Record<PoolHealth, number> = { GOOD: 0, UNKNOWN: 1, SUSPECT: 2, BAD: 3 };

/** Whether a pool may receive a new replica. */
export function takesReplicas(pool: PoolRecord): boolean {
  return pool.usage === "IN_USE" && pool.health !== "BAD";
}

/** Replicas per pool name, over every volume in the registry. */
export function replicasPerPool(volumes: readonly VolumeRecord[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of volumes)
    for (const r of v.status.replicas) counts.set(r.pool, (counts.get(r.pool) ?? 0) + 1);
  return counts;
}

/**
 * Choose `spec.replicas` pools among `pools` (restricted to `spec.pools`
 * when it names some). Throws `PoolNotFound` for a named pool that does not
 * exist and `InsufficientPools` when too few can take a replica.
 */
export function placeReplicas(
  spec: Pick<VolumeSpec, "replicas" | "pools">,
  pools: readonly PoolRecord[],
  load: ReadonlyMap<string, number>,
): PoolRecord[] {
  const byName = new Map(pools.map((p) => [p.name, p]));
  const missing = spec.pools.filter((name) => !byName.has(name));
  if (missing.length > 0)
    throw new ApiError("PoolNotFound", `no pool named ${missing.join(", ")}`, { pools: missing });
  const candidates =
    spec.pools.length > 0 ? spec.pools.map((name) => byName.get(name)!) : [...pools];
  const usable = candidates
    .filter(takesReplicas)
    .sort(
      (a, b) =>
        HEALTH_RANK[a.health] - HEALTH_RANK[b.health] ||
        (load.get(a.name) ?? 0) - (load.get(b.name) ?? 0) ||
        a.name.localeCompare(b.name),
    );
  if (usable.length < spec.replicas) {
    throw new ApiError(
      "InsufficientPools",
      `${spec.replicas} replica(s) need as many distinct pools taking new replicas; ${usable.length} available`,
      {
        usable: usable.map((p) => p.name),
        unusable: candidates.filter((p) => !takesReplicas(p)).map((p) => p.name),
      },
    );
  }
  return usable.slice(0, spec.replicas);
}
