/**
 * Volumes: `/api/v1/volumes`.
 */
import { z } from "zod";
import { VolumeName } from "../../contract/names.ts";
import { Volume, VolumeCreate, VolumeList, VolumePatch } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type Operation, operation } from "../http/operation.ts";
import { createVolume } from "../lifecycle/create-volume.ts";
import { deleteVolume } from "../lifecycle/delete-volume.ts";
import { updateVolume } from "../lifecycle/update-volume.ts";
import { volumes } from "../registry/volumes.ts";
import { ForceQuery } from "./force-query.ts";
import { volumeView } from "./views.ts";

const ByName = z.strictObject({ name: VolumeName });

export function volumeOperations(cp: ControlPlane): Operation[] {
  return [
    operation({
      method: "post",
      path: "/volumes",
      operationId: "createVolume",
      summary: "Create a volume: its page blobs, one per replica, on distinct pools",
      access: "admin",
      body: VolumeCreate,
      success: { status: 201, description: "the volume, DETACHED", schema: Volume },
      errors: [
        "VolumeExists",
        "PoolNotFound",
        "PoolNotUsable",
        "InsufficientPools",
        "StorageFailed",
      ],
      handle: async ({ body }) => volumeView(await createVolume(cp, body)),
    }),
    operation({
      method: "get",
      path: "/volumes",
      operationId: "listVolumes",
      summary: "List volumes",
      access: "admin",
      success: { status: 200, description: "every volume, by name", schema: VolumeList },
      handle: async () => ({
        items: (await volumes(cp.registry).list()).map((v) => volumeView(v.value)),
      }),
    }),
    operation({
      method: "get",
      path: "/volumes/:name",
      operationId: "getVolume",
      summary: "Show a volume",
      access: "admin",
      params: ByName,
      success: { status: 200, description: "the volume", schema: Volume },
      errors: ["VolumeNotFound"],
      handle: async ({ params }) => {
        const read = await volumes(cp.registry).get(params.name);
        if (!read)
          throw new ApiError("VolumeNotFound", `no volume named ${params.name}`, {
            volume: params.name,
          });
        return volumeView(read.value);
      },
    }),
    operation({
      method: "patch",
      path: "/volumes/:name",
      operationId: "updateVolume",
      summary:
        "Change a volume's replica count (raised: a new replica rebuilt from the others; lowered: one retired), placement rules or failover policy",
      access: "admin",
      params: ByName,
      body: VolumePatch,
      success: { status: 200, description: "the volume", schema: Volume },
      errors: ["VolumeNotFound", "VolumeBusy", "Conflict", "InsufficientPools"],
      handle: async ({ params, body }) => volumeView(await updateVolume(cp, params.name, body)),
    }),
    operation({
      method: "delete",
      path: "/volumes/:name",
      operationId: "deleteVolume",
      summary: "Delete a volume and its blobs; refused while attached unless force=true",
      access: "admin",
      params: ByName,
      // force=true deletes even an attached volume, fencing its writer.
      query: ForceQuery,
      success: { status: 204, description: "deleted" },
      errors: ["VolumeNotFound", "VolumeAttached", "VolumeBusy", "StorageFailed", "Conflict"],
      handle: ({ params, query }) => deleteVolume(cp, params.name, query.force),
    }),
  ];
}
