/**
 * Failures reported against pools recently: the agents' `storage-failure`
 * events naming a pool, and the control plane's own `replica-offline`
 * events (a writer took a replica of that pool out; not those of a lost
 * writer's replicas, which say nothing of the pool). A node reports only
 * about pools its own volumes use (reported-events.ts), and a
 * `replica-offline` counts only when the control plane recorded it: one
 * without that source (from a node, or recorded before sources were kept)
 * is nobody's evidence.
 *
 * The sweeper asks on every pass, so it reads only the window's rows: the
 * newest of each type's index partition, in the day tables the window
 * touches (registry/event-layout.ts), one range query per type and day
 * rather than an `or` of types, which Table Storage would answer by
 * scanning.
 */
import { odata } from "@azure/data-tables";
import {
  byType,
  DAY_MS,
  dayOf,
  dayTable,
  isMissingTable,
  rowKeyBefore,
  startOfDay,
} from "../registry/event-layout.ts";
import { unpackJson } from "../registry/fields.ts";
import type { Registry } from "../registry/tables.ts";

/** Types that count as a failure of the pool they name. */
export const FAILURE_EVENT_TYPES = ["storage-failure", "replica-offline"] as const;

/** The latest failure reported against a pool. */
export interface ReportedFailure {
  at: string;
  type: string;
  node?: string;
  message: string;
}

/** Per pool name, the latest failure reported at or after `since`, `now` being the window's end. */
export async function failuresReportedSince(
  registry: Registry,
  since: Date,
  now: Date,
): Promise<Map<string, ReportedFailure>> {
  const days: string[] = [];
  const end = Math.max(now.getTime(), since.getTime());
  for (let day = startOfDay(since.getTime()); day <= end; day += DAY_MS) days.push(dayOf(day));
  const found = await Promise.all(
    days.flatMap((day) => FAILURE_EVENT_TYPES.map((t) => failuresOn(registry, day, t, since))),
  );
  const latest = new Map<string, ReportedFailure>();
  for (const e of found.flat()) {
    if (typeof e.pool !== "string" || typeof e.at !== "string") continue;
    if (e.type === "replica-offline") {
      if (e.source !== "control-plane") continue;
      // Put offline because its writer was lost (arbiter/fence.ts, or the agent's own unclean stop): its pool did nothing wrong.
      if (isStale(e.data)) continue;
    }
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

/** The events of `type` on `day` at or after `since`. */
async function failuresOn(
  registry: Registry,
  day: string,
  type: string,
  since: Date,
): Promise<Array<Record<string, unknown>>> {
  const recent = rowKeyBefore(since.getTime());
  const filter = odata`PartitionKey eq ${byType(type)} and RowKey lt ${recent}`;
  const rows = dayTable(registry, day).listEntities<Record<string, unknown>>({
    queryOptions: { filter, select: ["pool", "at", "type", "node", "message", "data", "source"] },
  });
  const found: Array<Record<string, unknown>> = [];
  try {
    for await (const row of rows) found.push(row);
  } catch (err) {
    // Nothing was recorded that day.
    if (!isMissingTable(err)) throw err;
  }
  return found;
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
