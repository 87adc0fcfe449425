/**
 * Pools: `/api/v1/pools`.
 */
import { z } from "zod";
import { PoolName } from "../../contract/names.ts";
import { Pool, PoolAnnotationsPatch, PoolCreate, PoolList } from "../../contract/pool.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type Operation, operation } from "../http/operation.ts";
import { annotatePool } from "../lifecycle/annotate-pool.ts";
import { registerPool } from "../lifecycle/register-pool.ts";
import { releasePool } from "../lifecycle/release-pool.ts";
import { removePool } from "../lifecycle/remove-pool.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { poolView } from "./views.ts";

const ByName = z.strictObject({ name: PoolName });

export function poolOperations(cp: ControlPlane): Operation[] {
  return [
    operation({
      method: "post",
      path: "/pools",
      operationId: "registerPool",
      summary:
        "Register a storage account container as a pool (its container is created if missing)",
      access: "admin",
      body: PoolCreate,
      success: { status: 201, description: "the pool, secrets masked", schema: Pool },
      errors: ["PoolExists", "PoolUnreachable"],
      handle: async ({ body }) => shown(await registerPool(cp, body)),
    }),
    operation({
      method: "get",
      path: "/pools",
      operationId: "listPools",
      summary: "List pools",
      access: "admin",
      success: { status: 200, description: "every pool, by name", schema: PoolList },
      handle: async () => ({
        items: (await pools(cp.registry).list()).map((p) => shown(p.value)),
      }),
    }),
    operation({
      method: "get",
      path: "/pools/:name",
      operationId: "getPool",
      summary: "Show a pool",
      access: "admin",
      params: ByName,
      success: { status: 200, description: "the pool, secrets masked", schema: Pool },
      errors: ["PoolNotFound"],
      handle: async ({ params }) => {
        const read = await pools(cp.registry).get(params.name);
        if (!read)
          throw new ApiError("PoolNotFound", `no pool named ${params.name}`, { pool: params.name });
        return shown(read.value);
      },
    }),
    operation({
      method: "post",
      path: "/pools/:name/release",
      operationId: "releasePool",
      summary:
        "Move every replica off the pool (usage RELEASING, then RELEASED, or FAILED when one cannot move); the same as the action=remove annotation",
      access: "admin",
      params: ByName,
      success: {
        status: 200,
        description:
          "the pool after the first pass of its release (its release shows each replica; usage REMOVED if that removed it); RELEASING or RELEASED already: unchanged",
        schema: Pool,
      },
      errors: ["PoolNotFound", "Conflict"],
      handle: async ({ params }) => shown(await releasePool(cp, params.name)),
    }),
    operation({
      method: "patch",
      path: "/pools/:name/annotations",
      operationId: "annotatePool",
      summary:
        "Set or remove (null) pool annotations: removal=ready removes the pool once RELEASED, health=bad|suspect overrides its health, action=remove releases it and action=add puts it back IN_USE (action is acted on, not stored)",
      access: "admin",
      params: ByName,
      body: PoolAnnotationsPatch,
      success: {
        status: 200,
        description: "the pool with its annotations and their effects (usage REMOVED if removed)",
        schema: Pool,
      },
      errors: ["PoolNotFound", "PoolInUse", "Conflict"],
      handle: async ({ params, body }) => shown(await annotatePool(cp, params.name, body)),
    }),
    operation({
      method: "delete",
      path: "/pools/:name",
      operationId: "removePool",
      summary:
        "Forget a pool that holds no replica, IN_USE or RELEASED (its container and blobs are left alone)",
      access: "admin",
      params: ByName,
      success: { status: 204, description: "removed" },
      errors: ["PoolNotFound", "PoolInUse", "Conflict"],
      handle: ({ params }) => removePool(cp, params.name),
    }),
  ];
}

/** A pool as the API shows it, with its latest release. */
function shown(p: PoolRecord): Pool {
  return p.release ? { ...poolView(p), release: p.release } : poolView(p);
}
