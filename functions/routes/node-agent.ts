/**
 * The agent's own endpoints: join (with a join token), then reports and
 * desired state (with the node's credential, for that node only). A report
 * records only events the node is entitled to (health/reported-events.ts),
 * or nothing at all. None of them waits: heartbeats go to the liveness
 * table, and a change of desired state reaches the agent by a ring of its
 * row, not by a held request.
 */

import type { Context } from "hono";
import { z } from "zod";
import { NodeName } from "../../contract/names.ts";
import {
  DesiredState,
  DesiredStateQuery,
  JoinRequest,
  JoinResponse,
  Node,
  NodeReport,
  ReportAnswer,
} from "../../contract/node.ts";
import { desiredState } from "../arbiter/desired-state.ts";
import { livenessKeyOf, livenessTarget } from "../arbiter/liveness-target.ts";
import type { ControlPlane } from "../control-plane.ts";
import { recordReport } from "../health/report.ts";
import { ApiError } from "../http/api-error.ts";
import { callerOf } from "../http/auth.ts";
import { type Operation, operation } from "../http/operation.ts";
import { joinNode } from "../lifecycle/join-node.ts";
import { beatByApi } from "../registry/liveness.ts";
import { generationOf, type NodeRecord, nodes } from "../registry/nodes.ts";
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
        // Its liveness row was just made, with no beat in it yet.
        return { node: nodeView(node, undefined), credential };
      },
    }),
    operation({
      method: "post",
      path: "/nodes/:name/report",
      operationId: "reportNode",
      summary: "Report how the node's volumes are doing and what happened; sent when that changes",
      access: "node",
      params: ByName,
      body: NodeReport,
      success: { status: 200, description: "the node's desired generation", schema: ReportAnswer },
      // An event the node may not report refuses the whole report (health/reported-events.ts).
      errors: ["EventRefused"],
      handle: async ({ body, c }) => ({
        desiredGeneration: generationOf(await recordReport(cp, self(c), body)),
      }),
    }),
    operation({
      method: "post",
      path: "/nodes/:name/heartbeat",
      operationId: "heartbeat",
      summary:
        "Deprecated: agents before 0.2 report and beat here; recorded as a report and a heartbeat",
      access: "node",
      params: ByName,
      body: NodeReport,
      success: { status: 200, description: "the node as recorded", schema: Node },
      errors: ["EventRefused"],
      handle: async ({ body, c }) => {
        const node = await recordReport(cp, self(c), body);
        // Such an agent beats nowhere else: its liveness row (made by the upsert if need be) is
        // beaten for it, and the view shows that beat without reading it back.
        const now = cp.now().getTime();
        const key = await livenessKeyOf(cp, node);
        if (key === undefined) return nodeView(node, undefined);
        await beatByApi(cp.registry.liveness, key, now);
        return nodeView(node, now);
      },
    }),
    operation({
      method: "get",
      path: "/nodes/:name/desired",
      operationId: "getDesiredState",
      summary:
        "The volumes this node should serve, with lease ids and SAS URLs, and where to send its heartbeats",
      access: "node",
      params: ByName,
      query: DesiredStateQuery,
      success: { status: 200, description: "the desired state", schema: DesiredState },
      handle: async ({ c }) => {
        const caller = self(c).value;
        // The liveness row's ETag first, then the node and its volumes: a change after the
        // first read rings the row, and the agent's first beat on this ETag fails and fetches again.
        const liveness = await livenessTarget(cp, caller);
        const node = liveness && (await nodes(cp.registry).get(caller.name));
        if (!liveness || !node)
          throw new ApiError("Unauthorized", `node ${caller.name} is no longer registered`);
        return desiredState(cp, node.value, liveness.target);
      },
    }),
  ];
}
