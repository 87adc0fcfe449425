/**
 * `DELETE /volumes/{name}`: refused while any node may hold the volume's
 * lease (or while it is being created) unless forced. Forcing fences the
 * writer: its lease is broken and its blobs are gone.
 */
import { bumpDesiredGeneration } from "../arbiter/desired-generation.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { ATTACHED_STATES } from "../registry/volume-states.ts";
import { volumes } from "../registry/volumes.ts";
import { destroyVolume, markDeleting } from "./destroy-volume.ts";
import { note } from "./note.ts";

export async function deleteVolume(cp: ControlPlane, name: string, force: boolean): Promise<void> {
  const deleting = await retryOnConflict(async () => {
    const read = await volumes(cp.registry).get(name);
    if (!read) throw new ApiError("VolumeNotFound", `no volume named ${name}`, { volume: name });
    const { state, ownerNode } = read.value.status;
    if (!force && ATTACHED_STATES.includes(state)) {
      throw new ApiError(
        "VolumeAttached",
        `volume ${name} is ${state} (owner ${ownerNode}); detach it or delete with ?force=true`,
        {
          state,
          ownerNode,
        },
      );
    }
    if (!force && state === "CREATING") {
      throw new ApiError(
        "VolumeBusy",
        `volume ${name} is being created; retry, or delete with ?force=true`,
        { state },
      );
    }
    return markDeleting(cp, read);
  });
  // A forced delete takes the volume from its writer: tell that node now, not at its next full fetch.
  const owner = deleting.value.status.ownerNode;
  if (owner) await bumpDesiredGeneration(cp, owner, "detached");
  await destroyVolume(cp, deleting);
  await note(cp, {
    type: "volume-deleted",
    volume: name,
    message: `volume ${name} deleted${force ? " (forced)" : ""}`,
  });
}
