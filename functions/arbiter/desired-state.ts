/**
 * What a node should serve: every volume it owns and holds the lease for
 * (ATTACHED), with the lease id and SAS URLs scoped to each replica blob.
 * Volumes still ATTACHING are left out until their leases are in place;
 * a node never learns anything of volumes it does not own.
 *
 * Replicas are listed in preference order, ONLINE first (the first ONLINE
 * is the one reads go to), then by their pool's health, healthiest first;
 * CREATING ones (no blob yet) and RETIRING ones (leaving) are left out.
 */
import type { DesiredAttachment, DesiredState, LivenessTarget } from "../../contract/node.ts";
import type { ControlPlane } from "../control-plane.ts";
import { generationOf, type NodeRecord } from "../registry/nodes.ts";
import type { PoolHealth } from "../../contract/pool.ts";
import type { Replica, ReplicaState } from "../../contract/volume.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { volumesOwnedBy } from "../registry/owners.ts";
import { replicaSasExpiry, signedReplicaUrl } from "../storage/replica-sas.ts";

/**
 * The desired state of `node`, with `liveness` (liveness-target.ts) read
 * before `node` and before the volumes, so that the agent hears of any
 * change made after them.
 */
export async function desiredState(
  cp: ControlPlane,
  node: NodeRecord,
  liveness: LivenessTarget,
): Promise<DesiredState> {
  const [mine, allPools] = await Promise.all([
    volumesOwnedBy(cp.registry, node.name),
    pools(cp.registry).list(),
  ]);
  const owned = mine.filter((r) => r.value.status.state === "ATTACHED");
  const poolByName = new Map(allPools.map((p) => [p.value.name, p.value]));
  const now = cp.now();
  // One expiry for the whole answer: the agent renews by its earliest one anyway.
  const expiresAt = replicaSasExpiry(now, cp.replicaSasLifetimeMs);
  const attachments = await Promise.all(
    owned.map(async ({ value: v }): Promise<DesiredAttachment> => ({
      volume: v.name,
      sizeBytes: v.spec.sizeBytes,
      epoch: v.status.epoch,
      leaseId: v.leaseId!,
      replicas: await Promise.all(
        inPreferenceOrder(v.status.replicas, poolByName).map(async (r) => {
          const pool = poolByName.get(r.pool);
          // A pool that cannot sign now (its account refused a delegation key) leaves that
          // replica without a URL for this round; the node's other replicas still get theirs.
          const url =
            pool &&
            (await signedReplicaUrl(pool, v.name, r.id, r.uri, now, expiresAt).catch((err) => {
              cp.report(err);
              return undefined;
            }));
          const stale = r.state === "OFFLINE" && r.stale === true;
          return { id: r.id, pool: r.pool, state: r.state, url: url ?? null, ...(stale ? { stale } : {}) };
        }),
      ),
      sasExpiresAt: expiresAt.toISOString(),
    })),
  );
  return {
    node: node.name,
    generation: generationOf(node),
    state: node.state,
    cordoned: node.cordoned,
    attachments,
    liveness,
  };
}

const STATE_RANK: Partial<Record<ReplicaState, number>> = {
  ONLINE: 0,
  RESYNCING: 1,
  REBUILDING: 2,
  OFFLINE: 3,
};
const HEALTH_RANK: Record<PoolHealth, number> = { GOOD: 0, UNKNOWN: 1, SUSPECT: 2, BAD: 3 };

/** The replicas a writer is told of, best first; the sort is stable, so ties keep the record's order. */
export function inPreferenceOrder(
  replicas: readonly Replica[],
  poolByName: ReadonlyMap<string, PoolRecord>,
): Replica[] {
  const health = (r: Replica) => HEALTH_RANK[poolByName.get(r.pool)?.health ?? "BAD"];
  return replicas
    .filter((r) => STATE_RANK[r.state] !== undefined)
    .sort((a, b) => STATE_RANK[a.state]! - STATE_RANK[b.state]! || health(a) - health(b));
}
