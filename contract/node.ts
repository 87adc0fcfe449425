/**
 * Nodes: VMs running the agent.
 */
import { z } from "zod";
import { NodeName, Timestamp } from "./names.ts";

/** Health from heartbeats; the allowed moves are in functions/registry/node-states.ts. */
export const NODE_STATES = ["READY", "SUSPECT", "LOST"] as const;
export const NodeState = z.enum(NODE_STATES);
export type NodeState = z.infer<typeof NodeState>;

export const Node = z.object({
  name: NodeName,
  state: NodeState,
  /** A cordoned node keeps its volumes but gets no new ones. */
  cordoned: z.boolean(),
  agentVersion: z.string().max(64).nullable(),
  joinedAt: Timestamp,
  lastHeartbeatAt: Timestamp.nullable(),
});
export type Node = z.infer<typeof Node>;

export const NodeList = z.object({ items: z.array(Node) });
export type NodeList = z.infer<typeof NodeList>;
