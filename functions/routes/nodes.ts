/**
 * Nodes, as an admin sees them: `/api/v1/nodes`.
 */
import { z } from "zod";
import { NodeName } from "../../contract/names.ts";
import { Node, NodeList } from "../../contract/node.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type Operation, operation } from "../http/operation.ts";
import { removeNode, setCordoned } from "../lifecycle/node-admin.ts";
import { scanLiveness } from "../registry/liveness.ts";
import { nodes } from "../registry/nodes.ts";
import { nodeViewOf } from "./node-view.ts";
import { nodeView, shownBeat } from "./views.ts";

const ByName = z.strictObject({ name: NodeName });

export function nodeOperations(cp: ControlPlane): Operation[] {
  const cordon = (cordoned: boolean) =>
    operation({
      method: "post",
      path: `/nodes/:name/${cordoned ? "cordon" : "uncordon"}`,
      operationId: cordoned ? "cordonNode" : "uncordonNode",
      summary: cordoned
        ? "Keep new volumes off a node; its volumes stay"
        : "Let new volumes land on a node again",
      access: "admin",
      params: ByName,
      success: { status: 200, description: "the node", schema: Node },
      errors: ["NodeNotFound", "Conflict"],
      handle: async ({ params }) => nodeViewOf(cp, await setCordoned(cp, params.name, cordoned)),
    });
  return [
    operation({
      method: "get",
      path: "/nodes",
      operationId: "listNodes",
      summary: "List nodes",
      access: "admin",
      success: { status: 200, description: "every node, by name", schema: NodeList },
      handle: async () => {
        // The liveness table holds one row per node: one scan serves every node's view.
        const [all, rows] = await Promise.all([
          nodes(cp.registry).list(),
          scanLiveness(cp.registry.liveness),
        ]);
        const byKey = new Map(rows.map((r) => [r.key, r]));
        const now = cp.now().getTime();
        return {
          items: all.map(({ value: n }) =>
            nodeView(n, shownBeat(n.livenessKey === undefined ? undefined : byKey.get(n.livenessKey), now)),
          ),
        };
      },
    }),
    operation({
      method: "get",
      path: "/nodes/:name",
      operationId: "getNode",
      summary: "Show a node",
      access: "admin",
      params: ByName,
      success: { status: 200, description: "the node", schema: Node },
      errors: ["NodeNotFound"],
      handle: async ({ params }) => {
        const read = await nodes(cp.registry).get(params.name);
        if (!read)
          throw new ApiError("NodeNotFound", `no node named ${params.name}`, { node: params.name });
        return nodeViewOf(cp, read.value);
      },
    }),
    cordon(true),
    cordon(false),
    operation({
      method: "delete",
      path: "/nodes/:name",
      operationId: "removeNode",
      summary: "Forget a node that owns no volume; its credential stops working",
      access: "admin",
      params: ByName,
      success: { status: 204, description: "removed" },
      errors: ["NodeNotFound", "NodeInUse", "Conflict"],
      handle: ({ params }) => removeNode(cp, params.name),
    }),
  ];
}
