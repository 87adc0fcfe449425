/**
 * `PATCH /volumes/{name}`: placement rules and failover policy. They take
 * effect at the next placement decision; an attached volume stays where it is.
 */
import type { VolumePatch, VolumeSpec } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import { note } from "./note.ts";

export async function updateVolume(
  cp: ControlPlane,
  name: string,
  patch: VolumePatch,
): Promise<VolumeRecord> {
  const changes: Partial<VolumeSpec> = {};
  if (patch.requiredNodes !== undefined) changes.requiredNodes = patch.requiredNodes;
  if (patch.preferredNodes !== undefined) changes.preferredNodes = patch.preferredNodes;
  if (patch.failover !== undefined) changes.failover = patch.failover;
  const updated = await retryOnConflict(async () => {
    const read = await volumes(cp.registry).get(name);
    if (!read) throw new ApiError("VolumeNotFound", `no volume named ${name}`, { volume: name });
    const { state } = read.value.status;
    if (state === "CREATING" || state === "DELETING") {
      throw new ApiError("VolumeBusy", `volume ${name} is ${state}`, { state });
    }
    const next: VolumeRecord = {
      ...read.value,
      spec: { ...read.value.spec, ...changes },
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
  return updated;
}
