/**
 * The event log: what happened in the cluster, newest first, kept for a
 * number of days (registry/event-layout.ts says where an event is stored
 * and why; registry/event-retention.ts drops the days past keeping).
 *
 * Every event says who recorded it (`source`): the control plane, of what
 * it did itself (`recordEvent`, `recordEvents`), or a node, in its report
 * (`recordReportedEvents`). The source is written here, from which of them
 * was called, never taken from the event handed in: a node's word can
 * never pass for the control plane's record.
 *
 * A listing reads the index partition of its most selective criterion
 * (volume, then node, then type, else `all`) and applies the others within
 * it: a combined filter reads that partition's events, not only those it
 * returns. It reads the day tables newest first, back to the retention and
 * no further, whether or not older tables are still there, so that what
 * is listed does not depend on when they were last pruned.
 *
 * An event written to several partitions is written by one request per
 * partition; a failure between them leaves it in some listings only.
 */
import { odata } from "@azure/data-tables";
import { Event, type EventPage, type EventSource } from "../../contract/event.ts";
import type { ReportedEvent } from "../../contract/node.ts";
import {
  ALL,
  byNode,
  byType,
  byVolume,
  DAY_MS,
  dayOf,
  dayTable,
  isMissingTable,
  onDayTable,
  partitionsOf,
  rowKeyAt,
  rowKeyBefore,
  startOfDay,
  timeOfRowKey,
} from "./event-layout.ts";
import { packJson, unpackJson } from "./fields.ts";
import { insertRow, type Row } from "./rows.ts";
import type { Registry } from "./tables.ts";

/** How many days of events are kept unless the settings say otherwise. */
export const DEFAULT_EVENT_RETENTION_DAYS = 30;
/** The most operations a Table batch may hold. */
const MAX_BATCH = 100;

/** What a caller records; the registry adds id, time and source. */
export type NewEvent = Omit<Event, "id" | "at" | "source">;

/** Where a page ended: its last event's RowKey, which is also its id. */
export interface EventPosition {
  rowKey: string;
}

export interface EventFilter {
  volume?: string | undefined;
  node?: string | undefined;
  type?: string | undefined;
}

/** What a listing may see: the events of the last `retentionDays` days before `now`. */
export interface EventHorizon {
  now: Date;
  retentionDays: number;
}

/** Append one event of the control plane's at `at`; returns it as listed. */
export async function recordEvent(registry: Registry, at: Date, event: NewEvent): Promise<Event> {
  const [listed] = await recordEvents(registry, at, [event]);
  return listed!;
}

/** Append several events of the control plane's at `at` (see `append`). */
export function recordEvents(
  registry: Registry,
  at: Date,
  events: readonly NewEvent[],
): Promise<Event[]> {
  return append(registry, at, events, "control-plane");
}

/**
 * Append the events of `node`'s report at `at`, as that node's word: each
 * names the node, and says it came from one.
 */
export function recordReportedEvents(
  registry: Registry,
  at: Date,
  node: string,
  events: readonly ReportedEvent[],
): Promise<Event[]> {
  return append(
    registry,
    at,
    events.map((event) => ({ ...event, node })),
    "node",
  );
}

/**
 * Append several events at `at` with one request per index partition they
 * touch, not one per row: they share the day's table, and a batch holds up
 * to 100 rows of one partition.
 */
async function append(
  registry: Registry,
  at: Date,
  events: readonly NewEvent[],
  source: EventSource,
): Promise<Event[]> {
  const ms = at.getTime();
  const written = events.map((event) => rowOf(at, event, source));
  const partitions = new Map<string, Row[]>();
  for (const { row, listed } of written) {
    for (const partitionKey of partitionsOf(listed)) {
      const rows = partitions.get(partitionKey) ?? [];
      rows.push({ ...row, partitionKey });
      partitions.set(partitionKey, rows);
    }
  }
  const batches = [...partitions.values()].flatMap((rows) => chunks(rows, MAX_BATCH));
  await Promise.all(
    batches.map((batch) =>
      onDayTable(registry, dayOf(ms), async (table) => {
        if (batch.length === 1) await insertRow(table, batch[0]!);
        else await table.submitTransaction(batch.map((row) => ["create", row] as const));
      }),
    ),
  );
  return written.map(({ listed }) => listed);
}

/** An event's row, in every partition but for its PartitionKey. */
type EventRow = Record<string, unknown> & { rowKey: string };

function rowOf(at: Date, event: NewEvent, source: EventSource): { row: EventRow; listed: Event } {
  const rowKey = rowKeyAt(at.getTime());
  // Parsed first: a name that is not a valid name must not become a partition key.
  const listed = Event.parse({ ...event, id: rowKey, at: at.toISOString(), source });
  const { data, ...fields } = event;
  // Absent subjects stay absent (not empty strings), so `node eq 'x'` never matches them.
  const present = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
  const row = {
    rowKey,
    ...present,
    ...(data === undefined ? {} : { data: packJson("data", data) }),
    at: at.toISOString(),
    // Last, over anything of that name the event carried.
    source,
  };
  return { row, listed };
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Up to `limit` events matching `filter`, newest first, starting after
 * `after`. The continuation is set only when at least one more event exists.
 */
export async function listEvents(
  registry: Registry,
  filter: EventFilter,
  page: { limit: number; after?: EventPosition | undefined },
  horizon: EventHorizon,
): Promise<EventPage> {
  // One more than asked tells whether a next page exists.
  const found: Event[] = [];
  const events = eventsNewestFirst(registry, filter, horizon, {
    after: page.after,
    pageSize: page.limit + 1,
  });
  for await (const event of events) {
    found.push(event);
    if (found.length > page.limit) break;
  }
  const items = found.slice(0, page.limit);
  const last = items.at(-1);
  return {
    items,
    continuation: found.length > page.limit && last ? continuationOf({ rowKey: last.id }) : null,
  };
}

/**
 * The events matching `filter`, newest first, read a page of `pageSize`
 * at a time for as long as the caller keeps asking: a caller that wants
 * the first match only stops there.
 */
export async function* eventsNewestFirst(
  registry: Registry,
  filter: EventFilter,
  horizon: EventHorizon,
  options: { after?: EventPosition | undefined; pageSize?: number } = {},
): AsyncGenerator<Event> {
  const { partitionKey, criteria } = indexFor(filter);
  const oldest = horizon.now.getTime() - horizon.retentionDays * DAY_MS;
  const after = options.after?.rowKey;
  const afterMs = after === undefined ? undefined : timeOfRowKey(after);
  if (after !== undefined && afterMs === undefined)
    throw new RangeError(`not an event position: ${after}`);
  const first = startOfDay(afterMs ?? horizon.now.getTime());
  for (let day = first; day + DAY_MS > oldest; day -= DAY_MS) {
    const clauses = [odata`PartitionKey eq ${partitionKey}`];
    if (after !== undefined && day === first) clauses.push(odata`RowKey gt ${after}`);
    if (day <= oldest) clauses.push(odata`RowKey lt ${rowKeyBefore(oldest)}`);
    const query = dayTable(registry, dayOf(day)).listEntities<Record<string, unknown>>({
      queryOptions: { filter: [...clauses, ...criteria].join(" and ") },
    });
    try {
      for await (const rows of query.byPage({ maxPageSize: options.pageSize ?? 1000 })) {
        for (const row of rows) yield decode(row);
      }
    } catch (err) {
      // No event was written that day.
      if (!isMissingTable(err)) throw err;
    }
  }
}

/** The partition that answers `filter`, and the criteria left to apply within it. */
function indexFor(filter: EventFilter): { partitionKey: string; criteria: string[] } {
  const { volume, node, type } = filter;
  const nodeIs = node === undefined ? [] : [odata`node eq ${node}`];
  const typeIs = type === undefined ? [] : [odata`type eq ${type}`];
  if (volume !== undefined)
    return { partitionKey: byVolume(volume), criteria: [...nodeIs, ...typeIs] };
  if (node !== undefined) return { partitionKey: byNode(node), criteria: typeIs };
  if (type !== undefined) return { partitionKey: byType(type), criteria: [] };
  return { partitionKey: ALL, criteria: [] };
}

/** Opaque token for the position after which the next page starts. */
export function continuationOf(position: EventPosition): string {
  return Buffer.from(position.rowKey).toString("base64url");
}

/** Inverse of `continuationOf`; `undefined` for anything it did not produce. */
export function positionOf(continuation: string): EventPosition | undefined {
  const rowKey = Buffer.from(continuation, "base64url").toString();
  return timeOfRowKey(rowKey) === undefined ? undefined : { rowKey };
}

function decode(row: Record<string, unknown>): Event {
  return Event.parse({
    id: row.rowKey,
    at: row.at,
    type: row.type,
    volume: row.volume,
    node: row.node,
    pool: row.pool,
    message: row.message,
    data: row.data === undefined ? undefined : unpackJson(row.data),
    source: row.source,
  });
}
