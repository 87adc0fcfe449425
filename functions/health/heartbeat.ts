/**
 * A node's heartbeat: it is alive (back to READY if the sweeper had doubts)
 * and this is how its volumes are doing. Cheap by construction, since every
 * node sends one every few seconds:
 *
 * 1. the node's row was already read to check its credential (one read);
 * 2. one conditional write replaces it with the new time and reports;
 * 3. reported events, if any, go in one batch (one more transaction);
 *    a `replicas-diverged` one is also acted on (diverged.ts).
 *
 * A conflict (the sweeper marking the node, or the arbiter bumping its
 * desired-state generation, at the same moment) re-reads and writes again;
 * the heartbeat wins, since it proves the node is alive. Everything the
 * heartbeat does not report, the generation above all, is copied from the
 * row it replaces, so no bump is ever lost.
 */
import type { Heartbeat } from "../../contract/node.ts";
import { REPLICAS_DIVERGED } from "../../contract/signals.ts";
import { heartbeatsRecorded } from "../arbiter/desired-changes.ts";
import type { ControlPlane } from "../control-plane.ts";
import { note } from "../lifecycle/note.ts";
import { recordEvents } from "../registry/events.ts";
import { nodeStates } from "../registry/node-states.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { replicasDiverged } from "./diverged.ts";

export async function recordHeartbeat(
  cp: ControlPlane,
  read: Read<NodeRecord>,
  beat: Heartbeat,
): Promise<NodeRecord> {
  const table = nodes(cp.registry);
  const at = cp.now();
  const name = read.value.name;
  let current: Read<NodeRecord> | undefined = read;
  const { before, after } = await retryOnConflict(async () => {
    // The first attempt uses the row the credential check read; retries read afresh.
    const fresh = current ?? (await table.get(name));
    current = undefined;
    // Removed since the credential was checked: the heartbeat is moot, and the row must not return.
    if (!fresh) return { before: read.value, after: read.value };
    const node = fresh.value;
    if (node.state !== "READY") nodeStates.check(node.state, "READY");
    const next: NodeRecord = {
      ...node,
      state: "READY",
      agentVersion: beat.agentVersion ?? node.agentVersion,
      facts: beat.facts ?? node.facts,
      ...(beat.appliedGeneration === undefined ? {} : { appliedGeneration: beat.appliedGeneration }),
      volumes: beat.volumes,
      lastHeartbeatAt: at.toISOString(),
    };
    await table.replace(next, fresh.etag);
    return { before: node, after: next };
  });
  // A detach waiting in this process for this node to drain looks at the row now.
  heartbeatsRecorded(cp.registry).notify(name);
  // Written after the row: if this fails the agent sends the events again with its next beat.
  await recordEvents(
    cp.registry,
    at,
    beat.events.map((event) => ({ ...event, node: name })),
  );
  for (const event of beat.events) {
    if (event.type !== REPLICAS_DIVERGED) continue;
    // Recorded above whatever comes of it; a failure here must not fail the heartbeat.
    await replicasDiverged(cp, name, event).catch((err: unknown) => cp.report(err));
  }
  if (before.state !== after.state) {
    await note(cp, {
      type: "node-ready",
      node: name,
      message: `node ${name} is READY again (was ${before.state})`,
      data: { from: before.state },
    });
  }
  return after;
}
