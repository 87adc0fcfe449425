/**
 * Reconciliation: `/api/v1/reconciliation`, orphans and missing blobs, and
 * the explicit deletion of orphans.
 */
import {
  OrphanDeleteRequest,
  OrphanDeleteResult,
  Reconciliation,
  ReconciliationQuery,
} from "../../contract/reconciliation.ts";
import type { ControlPlane } from "../control-plane.ts";
import { type Operation, operation } from "../http/operation.ts";
import { deleteOrphans } from "../lifecycle/delete-orphans.ts";
import { DEFAULT_ORPHAN_GRACE_MS, reconcileBlobs } from "../lifecycle/reconcile-blobs.ts";

export interface ReconciliationOptions {
  /** Blobs modified within this many ms are `recent` and never deleted; default 10 minutes. */
  orphanGraceMs?: number | undefined;
}

export function reconciliationOperations(
  cp: ControlPlane,
  options: ReconciliationOptions = {},
): Operation[] {
  const graceMs = options.orphanGraceMs ?? DEFAULT_ORPHAN_GRACE_MS;
  return [
    operation({
      method: "get",
      path: "/reconciliation",
      operationId: "reconcile",
      summary:
        "List blobs no volume claims (orphans) and replicas whose blob is missing, in every pool or one, every blob named by its path <container>/<blob name>; deletes nothing",
      access: "admin",
      query: ReconciliationQuery,
      success: {
        status: 200,
        description: "orphans, missing blobs, and how listing each pool went",
        schema: Reconciliation,
      },
      errors: ["PoolNotFound"],
      handle: ({ query }) => reconcileBlobs(cp, { pool: query.pool, graceMs }),
    }),
    operation({
      method: "post",
      path: "/reconciliation/delete-orphans",
      operationId: "deleteOrphans",
      summary:
        "Delete orphans of one pool, named by path (<container>/<blob name>, or <container>/ for an empty replica container) or all, each checked again first; claimed or recent blobs never",
      access: "admin",
      body: OrphanDeleteRequest,
      success: {
        status: 200,
        description: "what happened to each blob",
        schema: OrphanDeleteResult,
      },
      errors: ["PoolNotFound", "NotAnOrphan", "StorageFailed"],
      handle: ({ body }) => deleteOrphans(cp, body, graceMs),
    }),
  ];
}
