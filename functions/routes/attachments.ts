/**
 * Attach and detach: `/api/v1/volumes/{name}/attach|detach`.
 */
import { z } from "zod";
import { Attachment, AttachRequest } from "../../contract/attachment.ts";
import { VolumeName } from "../../contract/names.ts";
import { Volume } from "../../contract/volume.ts";
import { attachVolume } from "../arbiter/attach.ts";
import { detachVolume } from "../arbiter/detach.ts";
import type { ControlPlane } from "../control-plane.ts";
import { type Operation, operation } from "../http/operation.ts";
import { ForceQuery } from "./force-query.ts";
import { volumeView } from "./views.ts";

const ByName = z.strictObject({ name: VolumeName });

export function attachmentOperations(cp: ControlPlane): Operation[] {
  return [
    operation({
      method: "post",
      path: "/volumes/:name/attach",
      operationId: "attachVolume",
      summary:
        "Make a node the volume's only writer: new epoch, every replica leased under a fresh lease id; without a node, one is chosen as failover would",
      access: "admin",
      params: ByName,
      body: AttachRequest,
      success: {
        status: 200,
        description: "the attachment, lease id included",
        schema: Attachment,
      },
      errors: [
        "VolumeNotFound",
        "NodeNotFound",
        "NodeNotEligible",
        "NoEligibleNode",
        "VolumeAttached",
        "VolumeBusy",
        "Conflict",
        "StorageFailed",
      ],
      handle: ({ params, body }) => attachVolume(cp, params.name, body.node),
    }),
    operation({
      method: "post",
      path: "/volumes/:name/detach",
      operationId: "detachVolume",
      summary:
        "Leave the volume with no writer: the owner drains it (up to PAGEDISK_DETACH_DRAIN_SECONDS, skipped with force=true), then every replica's lease is dropped",
      access: "admin",
      params: ByName,
      // force=true drops the leases at once, without waiting for the owner to drain the volume.
      query: ForceQuery,
      success: { status: 200, description: "the volume, DETACHED", schema: Volume },
      errors: ["VolumeNotFound", "VolumeBusy", "Conflict", "StorageFailed"],
      handle: async ({ params, query }) =>
        volumeView(
          await detachVolume(cp, params.name, query.force ? { skipDrain: "force=true" } : {}),
        ),
    }),
  ];
}
