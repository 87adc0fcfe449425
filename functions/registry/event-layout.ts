/**
 * Where the event log keeps an event.
 *
 * One table per UTC day, `<prefix>events<yyyymmdd>`: retention then drops
 * whole tables, one transaction each however many events they hold, and a
 * table is made by the first write of its day rather than ahead of time.
 *
 * Within a day, an event is written to every index partition it belongs to:
 *
 *   all          every event
 *   v|<volume>   the events naming that volume
 *   n|<node>     the events naming that node
 *   t|<type>     the events of that type
 *
 * because Table Storage answers a query fast only within one PartitionKey:
 * a filter on any other property is a scan of the table. Names are DNS-like
 * and types kebab-case (contract/), so none holds `|` or a character keys
 * refuse. Pools get no index: no listing asks for a pool's events, and the
 * sweeper's window of pool failures reads the failure types' partitions.
 *
 * RowKey = 9999999999999 - ms since the epoch, then `-` and 8 random hex,
 * the same in every partition: ascending key order is newest first (events
 * of one millisecond in random order), and the RowKey is the event's id.
 * Its time also names its day's table, so an id alone says where a listing
 * resumes.
 */
import { randomBytes } from "node:crypto";
import type { TableClient } from "@azure/data-tables";
import { restStatus } from "../rest-error.ts";
import type { Registry } from "./tables.ts";

export const DAY_MS = 86_400_000;
const LAST_MS = 9_999_999_999_999;
/** The table name before the day, after the registry's prefix. */
export const EVENT_TABLE = "events";

/** Every event's partition. */
export const ALL = "all";
export const byVolume = (volume: string) => `v|${volume}`;
export const byNode = (node: string) => `n|${node}`;
export const byType = (type: string) => `t|${type}`;

/** The index partitions an event is written to. */
export function partitionsOf(event: { type: string; volume?: string; node?: string }): string[] {
  return [
    ALL,
    ...(event.volume === undefined ? [] : [byVolume(event.volume)]),
    ...(event.node === undefined ? [] : [byNode(event.node)]),
    byType(event.type),
  ];
}

/** The UTC day of `ms` as `yyyymmdd`, as day table names carry it. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10).replaceAll("-", "");
}

/** Midnight UTC starting the day of `ms`. */
export function startOfDay(ms: number): number {
  return ms - (((ms % DAY_MS) + DAY_MS) % DAY_MS);
}

/** The table of one day (`yyyymmdd`); it exists once an event of that day was written. */
export function dayTable(registry: Registry, day: string): TableClient {
  return registry.table(`${EVENT_TABLE}${day}`);
}

/** A fresh RowKey for an event at `ms`. */
export function rowKeyAt(ms: number): string {
  return `${String(LAST_MS - ms).padStart(13, "0")}-${randomBytes(4).toString("hex")}`;
}

/**
 * The RowKey every event at or after `ms` sorts before: their keys start
 * with a smaller or equal number, then `-`, and `~` sorts after `-` and
 * every hex digit.
 */
export function rowKeyBefore(ms: number): string {
  return `${String(LAST_MS - ms).padStart(13, "0")}~`;
}

const ROW_KEY = /^(\d{13})-[0-9a-f]{8}$/;

/** The time of an event from its RowKey; undefined for anything `rowKeyAt` cannot have made. */
export function timeOfRowKey(rowKey: string): number | undefined {
  const m = ROW_KEY.exec(rowKey);
  return m ? LAST_MS - Number(m[1]) : undefined;
}

/** Whether an error says the table is not there: the day's first write, or a quiet day. */
export function isMissingTable(err: unknown): boolean {
  return restStatus(err) === 404;
}

/**
 * `write` on a day's table, making the table first if the write finds it
 * missing. Making it is harmless when a concurrent writer just did.
 */
export async function onDayTable<T>(
  registry: Registry,
  day: string,
  write: (table: TableClient) => Promise<T>,
): Promise<T> {
  const table = dayTable(registry, day);
  try {
    return await write(table);
  } catch (err) {
    if (!isMissingTable(err)) throw err;
    await table.createTable();
    return write(table);
  }
}
