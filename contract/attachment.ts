/**
 * Attachments: which node may write a volume, under which lease.
 */
import { z } from "zod";
import { NodeName, VolumeName } from "./names.ts";

/**
 * `POST /api/v1/volumes/{name}/attach`. Without `node` the control plane
 * chooses one as failover does: within requiredNodes, preferred first,
 * then the least loaded, then by name.
 */
export const AttachRequest = z.strictObject({ node: NodeName.optional() });
export type AttachRequest = z.infer<typeof AttachRequest>;

/**
 * The writer of a volume. The lease id is held on every replica blob; only
 * writes carrying it succeed, so a writer from an older epoch is fenced by
 * the storage service itself.
 */
export const Attachment = z.object({
  volume: VolumeName,
  node: NodeName,
  epoch: z.int().min(1),
  leaseId: z.uuid(),
});
export type Attachment = z.infer<typeof Attachment>;
