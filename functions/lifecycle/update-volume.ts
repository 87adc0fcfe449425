/**
 * `PATCH /volumes/{name}`: placement rules, failover policy and the
 * replica count. Rules take effect at the next placement decision; an
 * attached volume stays where it is. A new replica count is carried out by
 * the sweeper's repair (health/repair.ts) while the volume is attached:
 * raised, new replicas are made on other pools and rebuilt by the writer;
 * lowered, the surplus is retired. Raising it is refused with
 * `InsufficientPools` when too few pools could take the new replicas.
 *
 * Refused while the volume is ATTACHING or DETACHING: those steps finish
 * with a conditional write on the record as they claimed it, which a
 * change landing in between would make fail, leaving the volume for the
 * sweeper to repair a minute later. The change is for after them.
 *
 * Setting `failover: manual` on a DETACHED volume still owed a failover
 * (`status.failoverPending`) clears the mark in the same write, with a
 * `volume-failover-cancelled` event: the sweeper places only volumes with
 * automatic failover, so the mark would otherwise stay for good. A FENCING
 * volume keeps its mark: the sweeper's next pass finishes the fencing under
 * the new policy, and a manual one ends DETACHED and unmarked.
 */
import type { VolumePatch, VolumeSpec } from "../../contract/volume.ts";
import { countMembers } from "../health/repair-plan.ts";
import { poolsForNewReplicas } from "../health/replica-placement.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { pools } from "../registry/pools.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { type VolumeRecord, volumes, withFailoverPending } from "../registry/volumes.ts";
import { note } from "./note.ts";
import { replicasPerPool } from "./placement.ts";

const BUSY_STATES: readonly string[] = ["CREATING", "DELETING", "ATTACHING", "DETACHING"];

export async function updateVolume(
  cp: ControlPlane,
  name: string,
  patch: VolumePatch,
): Promise<VolumeRecord> {
  const changes: Partial<VolumeSpec> = {};
  if (patch.requiredNodes !== undefined) changes.requiredNodes = patch.requiredNodes;
  if (patch.preferredNodes !== undefined) changes.preferredNodes = patch.preferredNodes;
  if (patch.failover !== undefined) changes.failover = patch.failover;
  if (patch.replicas !== undefined) changes.replicas = patch.replicas;
  let cancelled = false;
  const updated = await retryOnConflict(async () => {
    const read = await volumes(cp.registry).get(name);
    if (!read) throw new ApiError("VolumeNotFound", `no volume named ${name}`, { volume: name });
    const { state } = read.value.status;
    if (BUSY_STATES.includes(state)) {
      throw new ApiError("VolumeBusy", `volume ${name} is ${state}; retry later`, { state });
    }
    const spec = { ...read.value.spec, ...changes };
    const adding = spec.replicas - countMembers(read.value.status.replicas).length;
    if (patch.replicas !== undefined && adding > 0) {
      const [allPools, allVolumes] = await Promise.all([
        pools(cp.registry).list(),
        volumes(cp.registry).list(),
      ]);
      // Throws InsufficientPools, and changes nothing, when the new replicas could not be placed.
      poolsForNewReplicas(
        read.value,
        adding,
        allPools.map((p) => p.value),
        replicasPerPool(allVolumes.map((v) => v.value)),
      );
    }
    cancelled =
      state === "DETACHED" &&
      read.value.status.failoverPending === true &&
      spec.failover === "manual";
    const next: VolumeRecord = {
      ...read.value,
      spec,
      status: cancelled ? withFailoverPending(read.value.status, false) : read.value.status,
      updatedAt: cp.now().toISOString(),
    };
    await volumes(cp.registry).replace(next, read.etag);
    return next;
  });
  await note(cp, {
    type: "volume-updated",
    volume: name,
    message: `volume ${name}: ${Object.keys(changes).join(", ")} changed`,
    data: changes,
  });
  if (cancelled) {
    await note(cp, {
      type: "volume-failover-cancelled",
      volume: name,
      message:
        `volume ${name}: failover set to manual, so the failover it was owed is cancelled; ` +
        "it stays detached",
      data: { reason: "failover-manual" },
    });
  }
  return updated;
}
