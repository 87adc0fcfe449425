/**
 * Where a fenced volume goes: a READY, uncordoned node within the volume's
 * required nodes when it names some (the old owner too, once it is READY
 * again: its lease is gone and it gets a new one, like any node); its
 * preferred nodes first (in the order listed), then the node serving the
 * fewest volumes, then by name so that the choice is deterministic.
 */

import type { NodeRecord } from "../registry/nodes.ts";
import type { VolumeRecord } from "../registry/volumes.ts";

export function chooseFailoverNode(
  volume: VolumeRecord,
  candidates: readonly NodeRecord[],
  load: ReadonlyMap<string, number>,
): NodeRecord | undefined {
  const { requiredNodes, preferredNodes } = volume.spec;
  const rank = (name: string) => {
    const i = preferredNodes.indexOf(name);
    return i < 0 ? preferredNodes.length : i;
  };
  return candidates
    .filter(
      (n) =>
        n.state === "READY" &&
        !n.cordoned &&
        (requiredNodes.length === 0 || requiredNodes.includes(n.name)),
    )
    .sort(
      (a, b) =>
        rank(a.name) - rank(b.name) ||
        (load.get(a.name) ?? 0) - (load.get(b.name) ?? 0) ||
        a.name.localeCompare(b.name),
    )[0];
}
