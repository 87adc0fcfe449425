/**
 * A volume's lease on all its replicas at once. Every replica is tried
 * even when one fails, so that no call is still running when the caller
 * rolls back or retries.
 *
 * Taking leases (attach, failover) and dropping them when fencing go on
 * without a replica whose pool cannot be reached (no answer, or a server
 * error), as long as at least one
 * ONLINE replica was reached: the caller records the others OFFLINE, and
 * the repair takes their lease before it has them resynced (health/repair.ts),
 * which fences out whoever held it. With no ONLINE replica reached, the
 * first failure is thrown, as it is for anything but a storage failure.
 */
import type { Replica } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { movedReplica } from "../registry/replica-states.ts";
import type { VolumeRecord } from "../registry/volumes.ts";
import { dropReplicaLease, takeReplicaLease } from "../storage/replica-leases.ts";
import { StorageFailure } from "../storage/storage-failure.ts";

/** A replica whose pool failed its lease call, and what the pool said. */
export interface UnreachableReplica {
  id: string;
  error: string;
}

async function onReplicas(
  cp: ControlPlane,
  volume: VolumeRecord,
  replicas: readonly Replica[],
  label: string,
  step: (pool: PoolRecord, replicaId: string) => Promise<void>,
): Promise<Array<PromiseSettledResult<void>>> {
  return Promise.allSettled(
    replicas.map(async (replica, i) => {
      const pool = await pools(cp.registry).get(replica.pool);
      // A pool cannot be removed while it holds replicas; a missing one is a broken invariant.
      if (!pool) throw new Error(`volume ${volume.name}: pool ${replica.pool} is not registered`);
      cp.faults?.beforeStep(`${label} ${i}`);
      await step(pool.value, replica.id);
    }),
  );
}

/**
 * The replicas that failed with a storage failure; throws the first
 * failure unless every one was a storage failure and an ONLINE replica
 * succeeded.
 */
function tolerated(
  replicas: readonly Replica[],
  outcomes: Array<PromiseSettledResult<void>>,
): UnreachableReplica[] {
  const failures = outcomes.flatMap((o, i) =>
    o.status === "rejected" ? [{ replica: replicas[i]!, reason: o.reason as unknown }] : [],
  );
  if (failures.length === 0) return [];
  const reachedOnline = replicas.some(
    (r, i) => r.state === "ONLINE" && outcomes[i]!.status === "fulfilled",
  );
  const foreign = failures.find((f) => !isUnreachable(f.reason));
  if (foreign) throw foreign.reason;
  if (!reachedOnline) throw failures[0]!.reason;
  return failures.map((f) => ({ id: f.replica.id, error: (f.reason as Error).message }));
}

/**
 * A pool that did not answer, or answered with a server error: an outage.
 * A blob gone (404) or a refusal (403) is not one: the attach fails on it
 * as before, since recording such a replica OFFLINE would hide a missing
 * blob from the reconciliation that reports it.
 */
function isUnreachable(err: unknown): boolean {
  return err instanceof StorageFailure && (err.status === undefined || err.status >= 500);
}

/** Replicas with a blob in use: not yet made (CREATING) and leaving (RETIRING) ones excluded. */
function inUse(volume: VolumeRecord): Replica[] {
  return volume.status.replicas.filter((r) => r.state !== "CREATING" && r.state !== "RETIRING");
}

/**
 * Lease every replica in use under `leaseId`, breaking any other lease.
 * Returns the replicas whose pool could not be reached (see the header).
 */
export async function takeLeases(
  cp: ControlPlane,
  volume: VolumeRecord,
  leaseId: string,
): Promise<UnreachableReplica[]> {
  const replicas = inUse(volume);
  const outcomes = await onReplicas(cp, volume, replicas, "take-lease", (pool, id) =>
    // Always a lease id drawn for this attach (attach.ts, fence.ts): no SAS names it yet.
    takeReplicaLease(pool, volume.name, id, leaseId, "new-writer"),
  );
  return tolerated(replicas, outcomes);
}

/**
 * Leave every replica without a lease: ours (`leaseId`) released, any
 * other broken. Any failure is thrown (detach, and the roll-back of an
 * attach, are retried whole).
 */
export async function dropLeases(
  cp: ControlPlane,
  volume: VolumeRecord,
  leaseId: string | null,
): Promise<void> {
  const outcomes = await onReplicas(cp, volume, volume.status.replicas, "drop-lease", (pool, id) =>
    dropReplicaLease(pool, volume.name, id, leaseId),
  );
  const failed = outcomes.find((o) => o.status === "rejected");
  if (failed) throw failed.reason;
}

/**
 * `dropLeases` for fencing: replicas whose pool cannot be reached are
 * returned instead of failing the whole, when an ONLINE one was reached.
 */
export async function dropReachableLeases(
  cp: ControlPlane,
  volume: VolumeRecord,
  leaseId: string | null,
): Promise<UnreachableReplica[]> {
  const replicas = volume.status.replicas;
  const outcomes = await onReplicas(cp, volume, replicas, "drop-lease", (pool, id) =>
    dropReplicaLease(pool, volume.name, id, leaseId),
  );
  return tolerated(replicas, outcomes);
}

/**
 * `replicas` with those unreachable recorded OFFLINE (ONLINE and copying
 * ones; others stay as they are), saying why.
 */
export function withUnreachableOffline(
  replicas: readonly Replica[],
  unreachable: readonly UnreachableReplica[],
  at: Date,
  when: string,
): Replica[] {
  return replicas.map((r) => {
    const failed = unreachable.find((u) => u.id === r.id);
    if (!failed || !["ONLINE", "RESYNCING", "REBUILDING"].includes(r.state)) return r;
    return movedReplica(r, "OFFLINE", at, `unreachable ${when}: ${failed.error}`);
  });
}
