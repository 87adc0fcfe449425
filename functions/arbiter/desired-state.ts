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
import type { VolumeRecord } from "../registry/volumes.ts";
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
  const attachments = await Promise.all(
    owned.map(async ({ value: v }): Promise<DesiredAttachment> => {
      const replicas = inPreferenceOrder(v.status.replicas, poolByName);
      // One expiry per attachment: the agent renews by its earliest one anyway. Short while a
      // replica's policy may not be in effect yet (see `policyMayBePending`).
      const pending = replicas.map((r) => policyMayBePending(v, r, now));
      const expiresAt = replicaSasExpiry(
        now,
        pending.includes(true) ? Math.min(UNBOUND_SAS_LIFETIME_MS, cp.replicaSasLifetimeMs) : cp.replicaSasLifetimeMs,
      );
      return {
        volume: v.name,
        sizeBytes: v.spec.sizeBytes,
        epoch: v.status.epoch,
        leaseId: v.leaseId!,
        replicas: await Promise.all(
          replicas.map(async (r, i) => {
            const pool = poolByName.get(r.pool);
            const access = { writer: v.leaseId!, bound: !pending[i] };
            // A pool that cannot sign now (its account refused a delegation key) leaves that
            // replica without a URL for this round; the node's other replicas still get theirs.
            const url =
              pool &&
              (await signedReplicaUrl(pool, v.name, r.id, r.uri, now, expiresAt, access).catch(
                (err) => {
                  cp.report(err);
                  return undefined;
                },
              ));
            const stale = r.state === "OFFLINE" && r.stale === true;
            return { id: r.id, pool: r.pool, state: r.state, url: url ?? null, ...(stale ? { stale } : {}) };
          }),
        ),
        sasExpiresAt: expiresAt.toISOString(),
      };
    }),
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

/**
 * Azure applies a new stored access policy within 30 s and refuses a SAS
 * bound to it until then; this leaves a margin for clocks.
 */
export const POLICY_PROPAGATION_MS = 35_000;
/**
 * How long a SAS not bound to a policy lives, given while the policy may
 * not be in effect yet. The agent renews it when half is left, by which
 * time the policy is: the bound SAS replaces it. A writer fenced in those
 * first minutes keeps its access until it expires (the README's security
 * section).
 */
export const UNBOUND_SAS_LIFETIME_MS = 2 * 60_000;

/**
 * Whether the policy of `r`'s container may be too new for Azure to honour
 * a SAS bound to it: set with the leases (`policiesSetAt`) or, for a replica
 * whose lease was taken later (a repair), when it last changed state.
 */
function policyMayBePending(v: VolumeRecord, r: Replica, now: Date): boolean {
  const set = Math.max(Date.parse(v.policiesSetAt ?? "") || 0, Date.parse(r.since ?? "") || 0);
  return now.getTime() - set < POLICY_PROPAGATION_MS;
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
