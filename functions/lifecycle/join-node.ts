/**
 * `POST /nodes/join`: an agent holding a join token registers its VM and
 * gets the node's credential. A name that is registered is refused, live
 * or not: a VM taking over a registered name could act for volumes it
 * never owned, so an operator removes the old node first.
 */
import type { JoinRequest } from "../../contract/node.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { createLivenessRow, newLivenessKey } from "../registry/liveness.ts";
import { newNodeCredential } from "../registry/node-credentials.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import { note } from "./note.ts";

export interface JoinedNode {
  node: NodeRecord;
  /** Shown to the agent this once; only its hash is in the node's row. */
  credential: string;
}

export async function joinNode(
  cp: ControlPlane,
  request: JoinRequest,
  tokenId: string,
): Promise<JoinedNode> {
  const table = nodes(cp.registry);
  if (await table.get(request.name)) throw exists(request.name);
  const { credential, sha256 } = newNodeCredential(request.name);
  const at = cp.now().toISOString();
  const node: NodeRecord = {
    name: request.name,
    state: "READY",
    cordoned: false,
    agentVersion: request.agentVersion ?? null,
    facts: request.facts,
    volumes: [],
    credentialSha256: sha256,
    livenessKey: newLivenessKey(),
    // Joining is the first sign of life: the sweeper counts silence from here.
    joinedAt: at,
    lastReportAt: null,
  };
  try {
    await table.insert(node);
  } catch (err) {
    throw isRegistryError(err, "Exists") ? exists(request.name) : err;
  }
  // Should this fail, the node's first desired-state fetch creates the row.
  await createLivenessRow(cp.registry.liveness, node.livenessKey!).catch(cp.report);
  await note(cp, {
    type: "node-joined",
    node: node.name,
    message: `node ${node.name} joined${node.agentVersion ? ` (agent ${node.agentVersion})` : ""}`,
    data: { tokenId },
  });
  return { node, credential };
}

function exists(name: string): ApiError {
  return new ApiError("NodeExists", `node ${name} is registered; remove it before joining again`, {
    node: name,
  });
}
