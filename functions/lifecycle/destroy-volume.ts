/**
 * The end of a volume: DELETING is recorded first (with a new epoch, which
 * fences any attach still in flight), then every replica blob is deleted
 * (leases broken), then the row goes. Each step repeats safely, so a
 * DELETING row left by a crash is finished by the next delete or sweep.
 */
import type { ControlPlane } from "../control-plane.ts";
import { pools } from "../registry/pools.ts";
import { forgetOwner } from "../registry/owners.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import type { Read } from "../registry/rows.ts";
import { volumeStates } from "../registry/volume-states.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import { deleteReplicaBlob } from "../storage/replica-blobs.ts";

/** Move a volume to DELETING by conditional write; `RegistryError("Conflict")` if it changed since read. */
export async function markDeleting(
  cp: ControlPlane,
  read: Read<VolumeRecord>,
): Promise<Read<VolumeRecord>> {
  const v = read.value;
  if (v.status.state === "DELETING") return read;
  volumeStates.check(v.status.state, "DELETING");
  const next: VolumeRecord = {
    ...v,
    status: { ...v.status, state: "DELETING", ownerNode: null, epoch: v.status.epoch + 1 },
    leaseId: null,
    updatedAt: cp.now().toISOString(),
  };
  const etag = await volumes(cp.registry).replace(next, read.etag);
  const owner = v.status.ownerNode;
  if (owner !== null) await forgetOwner(cp.registry, owner, v.name, etag).catch(cp.report);
  return { value: next, etag };
}

/** Delete the blobs of a DELETING volume, then its row. */
export async function destroyVolume(cp: ControlPlane, read: Read<VolumeRecord>): Promise<void> {
  const v = read.value;
  if (v.status.state !== "DELETING") throw new Error(`destroyVolume on a ${v.status.state} volume`);
  const poolTable = pools(cp.registry);
  // Settle every deletion before reporting one failure: a retry must not race blobs still being deleted.
  const outcomes = await Promise.allSettled(
    v.status.replicas.map(async (replica) => {
      const pool = await poolTable.get(replica.pool);
      // A pool holding replicas cannot be removed; if its record is gone anyway there is nothing left to reach.
      if (!pool)
        return cp.report(
          new Error(
            `volume ${v.name}: pool ${replica.pool} of replica ${replica.id} is not registered`,
          ),
        );
      await deleteReplicaBlob(pool.value, v.name, replica.id);
    }),
  );
  const failed = outcomes.find((o) => o.status === "rejected");
  if (failed) throw failed.reason;
  try {
    await volumes(cp.registry).remove(v.name, read.etag);
  } catch (err) {
    // Someone finished this deletion first.
    if (!isRegistryError(err, "Missing")) throw err;
  }
}
