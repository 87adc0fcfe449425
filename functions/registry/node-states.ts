/**
 * Node health from heartbeats. The sweeper moves a silent node to SUSPECT,
 * then LOST (and fences its volumes); any heartbeat brings it back to READY,
 * which is safe after LOST because its leases were broken by then.
 */
import type { NodeState } from "../../contract/node.ts";
import { stateMachine } from "./state-machine.ts";

export const nodeStates = stateMachine<NodeState>("node", {
  READY: ["SUSPECT"],
  SUSPECT: ["READY", "LOST"],
  LOST: ["READY"],
});
