/**
 * Where an attach that names no node goes: chosen by the rule failover
 * uses (failover-placement.ts), over the nodes and the load (volumes each
 * node owns) as they are now. The attach itself then checks the chosen
 * node again, as it checks a named one.
 *
 * A volume already ATTACHED is left where it is: its owner is returned,
 * so that attach answers with the attachment as it is, and a retried
 * "attach anywhere" does not move the volume. A volume on its way
 * somewhere (attaching, detaching, fencing...) is VolumeBusy, as for a
 * named node.
 */
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { nodes } from "../registry/nodes.ts";
import { volumes } from "../registry/volumes.ts";
import { chooseFailoverNode } from "./failover-placement.ts";

/** The node to attach volume `name` to; `NoEligibleNode` when none may take it. */
export async function placeAttachment(cp: ControlPlane, name: string): Promise<string> {
  const [all, candidates] = await Promise.all([
    volumes(cp.registry).list(),
    nodes(cp.registry).list(),
  ]);
  const volume = all.find((v) => v.value.name === name)?.value;
  if (!volume) throw new ApiError("VolumeNotFound", `no volume named ${name}`, { volume: name });
  const { state, ownerNode } = volume.status;
  if (state === "ATTACHED" && ownerNode !== null) return ownerNode;
  if (state !== "DETACHED") {
    throw new ApiError("VolumeBusy", `volume ${name} is ${state}; retry later`, {
      state,
      ownerNode,
    });
  }

  const load = new Map<string, number>();
  for (const { value: v } of all) {
    const owner = v.status.ownerNode;
    if (owner !== null) load.set(owner, (load.get(owner) ?? 0) + 1);
  }
  const chosen = chooseFailoverNode(
    volume,
    candidates.map((n) => n.value),
    load,
  );
  if (!chosen) {
    const { requiredNodes } = volume.spec;
    throw new ApiError(
      "NoEligibleNode",
      requiredNodes.length > 0
        ? `no READY, uncordoned node among volume ${name}'s required nodes ${requiredNodes.join(", ")}`
        : `no READY, uncordoned node to attach volume ${name} to`,
      { volume: name, requiredNodes },
    );
  }
  return chosen.name;
}
