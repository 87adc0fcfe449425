/**
 * `PATCH /volumes/{name}`: placement rules and failover policy. They take
 * effect at the next placement decision; an attached volume stays where it is.
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
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { type VolumeRecord, volumes, withFailoverPending } from "../registry/volumes.ts";
import { note } from "./note.ts";

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
  let cancelled = false;
  const updated = await retryOnConflict(async () => {
    const read = await volumes(cp.registry).get(name);
    if (!read) throw new ApiError("VolumeNotFound", `no volume named ${name}`, { volume: name });
    const { state } = read.value.status;
    if (BUSY_STATES.includes(state)) {
      throw new ApiError("VolumeBusy", `volume ${name} is ${state}; retry later`, { state });
    }
    const spec = { ...read.value.spec, ...changes };
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
