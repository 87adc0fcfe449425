/**
 * Failures reported against pools recently: the agents' `storage-failure`
 * events naming a pool, and the control plane's own `replica-offline`
 * events (a writer took a replica of that pool out; not those of a lost
 * writer's replicas, which say nothing of the pool). One range query over
 * the newest events: the event log's keys are newest first (see
 * registry/events.ts: PartitionKey = 99999 - days since the epoch, RowKey
 * = 9999999999999 - ms since the epoch, then `-` and random hex), so only
 * the window's rows are read, however long the log.
 */
import { odata } from "@azure/data-tables";
import { unpackJson } from "../registry/fields.ts";
import type { Registry } from "../registry/tables.ts";

const DAY_MS = 86_400_000;
const LAST_DAY = 99_999;
const LAST_MS = 9_999_999_999_999;
/** Types that count as a failure of the pool they name. */
export const FAILURE_EVENT_TYPES = ["storage-failure", "replica-offline"] as const;

/** The latest failure reported against a pool. */
export interface ReportedFailure {
  at: string;
  type: string;
  node?: string;
  message: string;
}

/** Per pool name, the latest failure reported at or after `since`. */
export async function failuresReportedSince(
  registry: Registry,
  since: Date,
): Promise<Map<string, ReportedFailure>> {
  const ms = since.getTime();
  const partition = String(LAST_DAY - Math.floor(ms / DAY_MS)).padStart(5, "0");
  // Row keys of `since`'s millisecond end with `-<hex>`; `~` sorts after every one of them.
  const row = `${String(LAST_MS - ms).padStart(13, "0")}~`;
  const types = FAILURE_EVENT_TYPES.map((t) => odata`type eq ${t}`).join(" or ");
  const filter =
    odata`(PartitionKey lt ${partition} or (PartitionKey eq ${partition} and RowKey lt ${row}))` +
    ` and (${types})`;
  const latest = new Map<string, ReportedFailure>();
  const rows = registry.events.listEntities<Record<string, unknown>>({
    queryOptions: { filter, select: ["pool", "at", "type", "node", "message", "data"] },
  });
  for await (const e of rows) {
    if (typeof e.pool !== "string" || typeof e.at !== "string") continue;
    // Put offline because its writer was lost (arbiter/fence.ts, or the agent's own unclean stop): its pool did nothing wrong.
    if (e.type === "replica-offline" && isStale(e.data)) continue;
    const known = latest.get(e.pool);
    if (known && known.at >= e.at) continue;
    latest.set(e.pool, {
      at: e.at,
      type: String(e.type),
      ...(typeof e.node === "string" ? { node: e.node } : {}),
      message: String(e.message),
    });
  }
  return latest;
}

/** Whether an event's `data` (a JSON string property) says `stale: true`. */
function isStale(data: unknown): boolean {
  if (typeof data !== "string") return false;
  try {
    const parsed = unpackJson(data);
    return typeof parsed === "object" && parsed !== null && (parsed as { stale?: unknown }).stale === true;
  } catch {
    return false;
  }
}
