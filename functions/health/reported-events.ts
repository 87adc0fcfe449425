/**
 * What a node may put in the event log through its report. Judged on the
 * registry's own records, never on the report or on earlier events (a node
 * could have written those too):
 *
 * - a type agents report (contract/event.ts `AGENT_EVENTS`);
 * - about a volume the node wrote at the epoch the event names
 *   (`data.epoch`). The volume's record keeps its last writers with the
 *   epoch of each attach (`status.writers`, written by the control plane
 *   when the attach completes), so an agent's event about an attachment
 *   that has just ended (detached, fenced, failed over) is still its own;
 * - naming, if it names one, a pool and a replica of that volume.
 *
 * A report with any other event is refused whole, before anything of it is
 * written (`EventRefused`, with each such event's index and why). The agent
 * drops those and sends the rest again (agent/control/report-loop.ts), so an
 * event the registry can no longer place (its volume deleted, its replica
 * retired, its epoch gone from the record) costs one refusal, never a
 * report stuck behind it.
 */
import { AGENT_EVENTS } from "../../contract/event.ts";
import type { ReportedEvent } from "../../contract/node.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";

/** A node that wrote a volume, and the epoch of that attachment. */
export interface Writer {
  node: string;
  epoch: number;
}

/** One refused event of a report: its place in `events`, and why. */
export interface RefusedEvent {
  index: number;
  reason: string;
}

const AGENT_EVENT_TYPES: ReadonlySet<string> = new Set(AGENT_EVENTS);

/**
 * The writers of `v` the registry recorded, newest first. A record written
 * before it kept them names only the writer it has now, if attached.
 */
export function writersOf(v: VolumeRecord): readonly Writer[] {
  if (v.status.writers !== undefined) return v.status.writers;
  const { state, ownerNode, epoch } = v.status;
  return state === "ATTACHED" && ownerNode !== null ? [{ node: ownerNode, epoch }] : [];
}

/** Whether the registry made `node` the writer of `v` at `epoch` (an attach or a failover). */
export function wroteAt(v: VolumeRecord, node: string, epoch: number): boolean {
  return writersOf(v).some((w) => w.node === node && w.epoch === epoch);
}

/**
 * Throws `EventRefused` unless `node` may report every one of `events`.
 * Reads each volume the events name once, and none for a report without
 * events or events refused on their face.
 */
export async function checkReportedEvents(
  cp: ControlPlane,
  node: string,
  events: readonly ReportedEvent[],
): Promise<void> {
  if (events.length === 0) return;
  const faces = events.map(refusalOnItsFace);
  const names = new Set(events.flatMap((e, i) => (faces[i] === undefined ? [e.volume!] : [])));
  const table = volumes(cp.registry);
  const records = new Map(
    await Promise.all([...names].map(async (name) => [name, (await table.get(name))?.value] as const)),
  );
  const refused: RefusedEvent[] = [];
  events.forEach((event, index) => {
    const reason = faces[index] ?? refusalByRecord(event, node, records.get(event.volume!));
    if (reason !== undefined) refused.push({ index, reason });
  });
  if (refused.length === 0) return;
  const first = refused[0]!;
  throw new ApiError(
    "EventRefused",
    `node ${node} may not report ${refused.length} of its ${events.length} events (nothing was recorded); event ${first.index}: ${first.reason}`,
    { refused },
  );
}

/** Why `event` is refused whatever the registry holds, if it is. */
function refusalOnItsFace(event: ReportedEvent): string | undefined {
  if (!AGENT_EVENT_TYPES.has(event.type)) return `${event.type} is not an event agents report`;
  if (event.volume === undefined) return "it names no volume";
  const epoch = event.data?.epoch;
  if (typeof epoch !== "number" || !Number.isSafeInteger(epoch) || epoch < 1)
    return "it names no epoch (data.epoch, a whole number from 1)";
  const replica = event.data?.replica;
  if (replica !== undefined && typeof replica !== "string") return "data.replica is not a replica id";
  if (event.type === "storage-failure" && (event.pool === undefined || replica === undefined))
    return "a storage-failure names its pool and its replica (data.replica)";
  return undefined;
}

/**
 * Why `event`, well-formed, is refused given `v`, the record of the volume
 * it names (undefined when there is none). A volume that does not exist and
 * one the node did not write are refused in the same words, so that a node
 * cannot learn from a refusal which other volumes exist.
 */
function refusalByRecord(
  event: ReportedEvent,
  node: string,
  v: VolumeRecord | undefined,
): string | undefined {
  const epoch = event.data!.epoch as number;
  if (v === undefined || !wroteAt(v, node, epoch))
    return `node ${node} did not write volume ${event.volume} at epoch ${epoch}`;
  const { pool } = event;
  const replica = event.data?.replica as string | undefined;
  if (replica !== undefined) {
    const r = v.status.replicas.find((x) => x.id === replica);
    if (r === undefined) return `volume ${v.name} has no replica ${replica}`;
    if (pool !== undefined && r.pool !== pool)
      return `replica ${replica} of volume ${v.name} is not on pool ${pool}`;
    return undefined;
  }
  if (pool !== undefined && !v.status.replicas.some((r) => r.pool === pool))
    return `volume ${v.name} has no replica on pool ${pool}`;
  return undefined;
}
