/**
 * Admin changes to a node: cordon, uncordon, remove. Removal is refused
 * while any volume names the node as its owner (detach them, or let the
 * sweeper fence them once the node is LOST); it deletes the row, and the
 * node's credential with it, then its liveness row, after which its
 * liveness SAS can write nothing.
 */
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { deleteLivenessRow } from "../registry/liveness.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { volumesOwnedBy } from "../registry/owners.ts";
import { note } from "./note.ts";

async function readNode(cp: ControlPlane, name: string): Promise<Read<NodeRecord>> {
  const read = await nodes(cp.registry).get(name);
  if (!read) throw new ApiError("NodeNotFound", `no node named ${name}`, { node: name });
  return read;
}

/** Set whether new volumes may land on the node; setting it as it is changes nothing. */
export async function setCordoned(
  cp: ControlPlane,
  name: string,
  cordoned: boolean,
): Promise<NodeRecord> {
  const { node, changed } = await retryOnConflict(async () => {
    const read = await readNode(cp, name);
    if (read.value.cordoned === cordoned) return { node: read.value, changed: false };
    const next = { ...read.value, cordoned };
    await nodes(cp.registry).replace(next, read.etag);
    return { node: next, changed: true };
  });
  if (changed) {
    await note(cp, {
      type: cordoned ? "node-cordoned" : "node-uncordoned",
      node: name,
      message: `node ${name} ${cordoned ? "cordoned" : "uncordoned"}`,
    });
  }
  return node;
}

/** Forget a node that owns no volume. Its credential stops working at once. */
export async function removeNode(cp: ControlPlane, name: string): Promise<void> {
  const removed = await retryOnConflict(async () => {
    const read = await readNode(cp, name);
    const owned = await volumesOwnedBy(cp.registry, name);
    if (owned.length > 0) {
      const names = owned.map((v) => v.value.name);
      throw new ApiError("NodeInUse", `node ${name} owns volumes: ${names.join(", ")}`, {
        volumes: names,
      });
    }
    try {
      await nodes(cp.registry).remove(name, read.etag);
    } catch (err) {
      if (!isRegistryError(err, "Missing")) throw err;
    }
    return read.value;
  });
  if (removed.livenessKey !== undefined) {
    // The node is gone already: a row left by a failure here is no one's, and its SAS can
    // update that row only, which nothing reads as anyone's heartbeat. Reported, not thrown.
    await deleteLivenessRow(cp.registry.liveness, removed.livenessKey).catch(cp.report);
  }
  await note(cp, { type: "node-removed", node: name, message: `node ${name} removed` });
}
