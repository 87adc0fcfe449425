/**
 * An agent's report: how its volumes are doing, what happened (events),
 * which desired-state generation it has applied. Agents send one when any
 * of that changes, not on a timer: their heartbeats go to the liveness
 * table (registry/liveness.ts), and the sweeper judges health from those.
 *
 * 1. the node's row was already read to check its credential (one read);
 * 2. its events, if any, are checked against the registry
 *    (reported-events.ts: one read per volume they name); a report with one
 *    the node may not report is refused, and nothing of it is written;
 * 3. one conditional write replaces the node's row with the report;
 * 4. reported events, if any, are recorded after it, as the node's word
 *    (registry/events.ts `recordReportedEvents`); a `replicas-diverged` one
 *    is also acted on (diverged.ts).
 *
 * A conflict (the sweeper marking the node, or the arbiter bumping its
 * desired-state generation, at the same moment) re-reads and writes again.
 * Everything the report does not carry, the generation and the node's
 * health above all, is copied from the row it replaces, so no bump and no
 * judgement is ever lost.
 */
import type { NodeReport } from "../../contract/node.ts";
import { REPLICAS_DIVERGED } from "../../contract/signals.ts";
import { reportsRecorded } from "../arbiter/report-watch.ts";
import type { ControlPlane } from "../control-plane.ts";
import { recordReportedEvents } from "../registry/events.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { replicasDiverged } from "./diverged.ts";
import { checkReportedEvents } from "./reported-events.ts";

export async function recordReport(
  cp: ControlPlane,
  read: Read<NodeRecord>,
  report: NodeReport,
): Promise<NodeRecord> {
  const table = nodes(cp.registry);
  const at = cp.now();
  const name = read.value.name;
  // Before anything is written: a refused report must leave no trace, its row included.
  await checkReportedEvents(cp, name, report.events);
  let current: Read<NodeRecord> | undefined = read;
  const after = await retryOnConflict(async () => {
    // The first attempt uses the row the credential check read; retries read afresh.
    const fresh = current ?? (await table.get(name));
    current = undefined;
    // Removed since the credential was checked: the report is moot, and the row must not return.
    if (!fresh) return read.value;
    const node = fresh.value;
    const next: NodeRecord = {
      ...node,
      agentVersion: report.agentVersion ?? node.agentVersion,
      facts: report.facts ?? node.facts,
      ...(report.appliedGeneration === undefined
        ? {}
        : { appliedGeneration: report.appliedGeneration }),
      volumes: report.volumes,
      lastReportAt: at.toISOString(),
    };
    await table.replace(next, fresh.etag);
    return next;
  });
  // A detach waiting in this process for this node to drain looks at the row now.
  reportsRecorded(cp.registry).notify(name);
  // Written after the row: if this fails the agent sends the events again with its next report.
  await recordReportedEvents(cp.registry, at, name, report.events);
  for (const event of report.events) {
    if (event.type !== REPLICAS_DIVERGED) continue;
    // Recorded above whatever comes of it; a failure here must not fail the report.
    await replicasDiverged(cp, name, event).catch((err: unknown) => cp.report(err));
  }
  return after;
}
