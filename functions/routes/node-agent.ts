/**
 * The agent's own endpoints: join (with a join token), then heartbeat and
 * desired state (with the node's credential, for that node only).
 */

import type { Context } from "hono";
import { z } from "zod";
import { NodeName } from "../../contract/names.ts";
import {
  DesiredState,
  DesiredStateQuery,
  Heartbeat,
  JoinRequest,
  JoinResponse,
  Node,
} from "../../contract/node.ts";
import { desiredState } from "../arbiter/desired-state.ts";
import { awaitDesiredChange } from "../arbiter/desired-wait.ts";
import type { ControlPlane } from "../control-plane.ts";
import { recordHeartbeat } from "../health/heartbeat.ts";
import { callerOf } from "../http/auth.ts";
import { type Operation, operation } from "../http/operation.ts";
import { joinNode } from "../lifecycle/join-node.ts";
import type { NodeRecord } from "../registry/nodes.ts";
import type { Read } from "../registry/rows.ts";
import { nodeView } from "./views.ts";

const ByName = z.strictObject({ name: NodeName });

/** The node the guard verified; its row as read there. */
function self(c: Context): Read<NodeRecord> {
  const caller = callerOf(c);
  if (caller.kind !== "node") throw new Error(`node endpoint admitted a ${caller.kind} caller`);
  return caller.node;
}

export function nodeAgentOperations(cp: ControlPlane): Operation[] {
  return [
    operation({
      method: "post",
      path: "/nodes/join",
      operationId: "joinNode",
      summary: "Register this VM as a node; the node's credential is in this response only",
      access: "join",
      body: JoinRequest,
      success: { status: 201, description: "the node and its credential", schema: JoinResponse },
      errors: ["NodeExists"],
      handle: async ({ body, c }) => {
        const caller = callerOf(c);
        const tokenId = caller.kind === "join" ? caller.tokenId : "";
        const { node, credential } = await joinNode(cp, body, tokenId);
        return { node: nodeView(node), credential };
      },
    }),
    operation({
      method: "post",
      path: "/nodes/:name/heartbeat",
      operationId: "heartbeat",
      summary: "Report that the node is alive, how its volumes are doing, and events",
      access: "node",
      params: ByName,
      body: Heartbeat,
      success: { status: 200, description: "the node as recorded", schema: Node },
      handle: async ({ body, c }) => nodeView(await recordHeartbeat(cp, self(c), body)),
    }),
    operation({
      method: "get",
      path: "/nodes/:name/desired",
      operationId: "getDesiredState",
      summary:
        "The volumes this node should serve, with lease ids and SAS URLs; with `after`, held up to `waitSeconds` until it changes",
      access: "node",
      params: ByName,
      query: DesiredStateQuery,
      success: { status: 200, description: "the desired state", schema: DesiredState },
      handle: async ({ query, c }) => {
        const node = await awaitDesiredChange(cp, self(c), {
          after: query.after,
          waitMs: query.waitSeconds * 1000,
          signal: c.req.raw.signal,
        });
        return desiredState(cp, node);
      },
    }),
  ];
}
