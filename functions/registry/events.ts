/**
 * The event log. Keys make Table Storage's own order (PartitionKey, then
 * RowKey, ascending) newest first:
 *
 *   PartitionKey = 99999 - days since the epoch     (one partition per day)
 *   RowKey       = 9999999999999 - ms since the epoch, then `-` and 8 random hex
 *
 * so a listing is a forward range scan, and a page ends at a position
 * (PartitionKey, RowKey) that the next page starts after. Events within
 * one millisecond come in random order.
 */
import { randomBytes } from "node:crypto";
import { odata } from "@azure/data-tables";
import { Event, type EventPage } from "../../contract/event.ts";
import { packJson, unpackJson } from "./fields.ts";
import { insertRow, type Row } from "./rows.ts";
import type { Registry } from "./tables.ts";

const DAY_MS = 86_400_000;
const LAST_DAY = 99_999;
const LAST_MS = 9_999_999_999_999;

/** What a caller records; the registry adds id and time. */
export type NewEvent = Omit<Event, "id" | "at">;

/** Where a page ended. */
export interface EventPosition {
  partitionKey: string;
  rowKey: string;
}

export interface EventFilter {
  volume?: string | undefined;
  node?: string | undefined;
  type?: string | undefined;
}

/** Append one event at `at`; returns it as listed. */
export async function recordEvent(registry: Registry, at: Date, event: NewEvent): Promise<Event> {
  const { row, listed } = rowOf(at, event);
  await insertRow(registry.events, row);
  return listed;
}

/**
 * Append several events at `at` in one Table transaction: they share the
 * day's partition, so the batch is one request however many there are (up
 * to the service's 100).
 */
export async function recordEvents(
  registry: Registry,
  at: Date,
  events: readonly NewEvent[],
): Promise<Event[]> {
  if (events.length === 0) return [];
  if (events.length === 1) return [await recordEvent(registry, at, events[0]!)];
  const rows = events.map((event) => rowOf(at, event));
  await registry.events.submitTransaction(rows.map(({ row }) => ["create", row] as const));
  return rows.map(({ listed }) => listed);
}

function rowOf(at: Date, event: NewEvent): { row: Row; listed: Event } {
  const ms = at.getTime();
  const partitionKey = String(LAST_DAY - Math.floor(ms / DAY_MS)).padStart(5, "0");
  const rowKey = `${String(LAST_MS - ms).padStart(13, "0")}-${randomBytes(4).toString("hex")}`;
  const { data, ...fields } = event;
  // Absent subjects stay absent (not empty strings), so `volume eq 'x'` never matches them.
  const present = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
  const row: Row = {
    partitionKey,
    rowKey,
    ...present,
    ...(data === undefined ? {} : { data: packJson("data", data) }),
    at: at.toISOString(),
  };
  const listed = Event.parse({
    ...event,
    id: idOf({ partitionKey, rowKey }),
    at: at.toISOString(),
  });
  return { row, listed };
}

/**
 * Up to `limit` events matching `filter`, newest first, starting after
 * `after`. The continuation is set only when at least one more event exists.
 */
export async function listEvents(
  registry: Registry,
  filter: EventFilter,
  page: { limit: number; after?: EventPosition | undefined },
): Promise<EventPage> {
  const clauses: string[] = [];
  if (filter.volume !== undefined) clauses.push(odata`volume eq ${filter.volume}`);
  if (filter.node !== undefined) clauses.push(odata`node eq ${filter.node}`);
  if (filter.type !== undefined) clauses.push(odata`type eq ${filter.type}`);
  if (page.after) {
    const { partitionKey: pk, rowKey: rk } = page.after;
    clauses.push(odata`((PartitionKey eq ${pk} and RowKey gt ${rk}) or PartitionKey gt ${pk})`);
  }
  const query = registry.events.listEntities<Record<string, unknown>>(
    clauses.length > 0 ? { queryOptions: { filter: clauses.join(" and ") } } : {},
  );
  // One more than asked tells whether a next page exists without a second round trip.
  const found: Event[] = [];
  const positions: EventPosition[] = [];
  for await (const batch of query.byPage({ maxPageSize: page.limit + 1 })) {
    for (const row of batch) {
      const position = { partitionKey: String(row.partitionKey), rowKey: String(row.rowKey) };
      found.push(decode(position, row));
      positions.push(position);
    }
    // The service may answer short pages with a continuation; keep reading until enough.
    if (found.length > page.limit) break;
  }
  const more = found.length > page.limit;
  const items = found.slice(0, page.limit);
  return { items, continuation: more ? continuationOf(positions[page.limit - 1]!) : null };
}

/** Opaque token for the position after which the next page starts. */
export function continuationOf(position: EventPosition): string {
  return Buffer.from(idOf(position)).toString("base64url");
}

/** Inverse of `continuationOf`; `undefined` for anything it did not produce. */
export function positionOf(continuation: string): EventPosition | undefined {
  const id = Buffer.from(continuation, "base64url").toString();
  const m = /^(\d{5})\.(\d{13}-[0-9a-f]{8})$/.exec(id);
  return m ? { partitionKey: m[1]!, rowKey: m[2]! } : undefined;
}

function idOf(position: EventPosition): string {
  return `${position.partitionKey}.${position.rowKey}`;
}

function decode(position: EventPosition, row: Record<string, unknown>): Event {
  return Event.parse({
    id: idOf(position),
    at: row.at,
    type: row.type,
    volume: row.volume,
    node: row.node,
    pool: row.pool,
    message: row.message,
    data: row.data === undefined ? undefined : unpackJson(row.data),
  });
}
