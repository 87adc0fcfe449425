/** A node's view with its last heartbeat, read from its liveness row. */
import type { Node } from "../../contract/node.ts";
import type { ControlPlane } from "../control-plane.ts";
import { readLivenessRow } from "../registry/liveness.ts";
import type { NodeRecord } from "../registry/nodes.ts";
import { nodeView, shownBeat } from "./views.ts";

export async function nodeViewOf(cp: ControlPlane, n: NodeRecord): Promise<Node> {
  const beat =
    n.livenessKey === undefined
      ? undefined
      : await readLivenessRow(cp.registry.liveness, n.livenessKey);
  const now = cp.now().getTime();
  return nodeView(n, shownBeat(beat, now));
}
