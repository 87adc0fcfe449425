/**
 * Pools: `/api/v1/pools`.
 */
import { z } from "zod";
import { PoolName } from "../../contract/names.ts";
import { Pool, PoolCreate, PoolList } from "../../contract/pool.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type Operation, operation } from "../http/operation.ts";
import { registerPool } from "../lifecycle/register-pool.ts";
import { removePool } from "../lifecycle/remove-pool.ts";
import { pools } from "../registry/pools.ts";
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
      handle: async ({ body }) => poolView(await registerPool(cp, body)),
    }),
    operation({
      method: "get",
      path: "/pools",
      operationId: "listPools",
      summary: "List pools",
      access: "admin",
      success: { status: 200, description: "every pool, by name", schema: PoolList },
      handle: async () => ({
        items: (await pools(cp.registry).list()).map((p) => poolView(p.value)),
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
        return poolView(read.value);
      },
    }),
    operation({
      method: "delete",
      path: "/pools/:name",
      operationId: "removePool",
      summary: "Forget a pool that holds no replica (its container and blobs are left alone)",
      access: "admin",
      params: ByName,
      success: { status: 204, description: "removed" },
      errors: ["PoolNotFound", "PoolInUse", "Conflict"],
      handle: ({ params }) => removePool(cp, params.name),
    }),
  ];
}
