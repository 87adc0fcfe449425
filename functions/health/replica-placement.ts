/**
 * Where a volume's new replica goes (a rebuild, a move, a raised replica
 * count): a pool taking new replicas that holds none of this volume's
 * replicas, within the volume's `pools` when it names some, chosen as
 * volume creation chooses (lifecycle/placement.ts).
 */
import { ApiError } from "../http/api-error.ts";
import { placeReplicas } from "../lifecycle/placement.ts";
import type { PoolRecord } from "../registry/pools.ts";
import type { VolumeRecord } from "../registry/volumes.ts";

/**
 * `count` pools for new replicas of `volume`, best first. Throws
 * `InsufficientPools` when fewer can take one.
 */
export function poolsForNewReplicas(
  volume: VolumeRecord,
  count: number,
  allPools: readonly PoolRecord[],
  load: ReadonlyMap<string, number>,
): PoolRecord[] {
  const used = new Set(volume.status.replicas.map((r) => r.pool));
  const open = allPools.filter((p) => !used.has(p.name));
  const named = volume.spec.pools.filter((name) => open.some((p) => p.name === name));
  if (volume.spec.pools.length > 0 && named.length === 0) {
    throw new ApiError(
      "InsufficientPools",
      `volume ${volume.name} may only use pools ${volume.spec.pools.join(", ")}, and each already holds one of its replicas`,
      { usable: [], pools: volume.spec.pools },
    );
  }
  return placeReplicas({ replicas: count, pools: named }, open, load);
}
