/**
 * Retention of the event log: a day's table is dropped once every event in
 * it is past the retention. Deleting a table is one transaction however
 * many events it holds, where deleting events would cost one per row and
 * partition. Listings stop at the retention by themselves
 * (registry/events.ts), so when this runs decides only how long storage
 * keeps what nobody lists.
 *
 * The tables are found by a Query Tables over a range of names (day tables
 * sort by day), and only names that are exactly a day table of this
 * registry are deleted: other registries may share the account, and their
 * prefixes can fall in the range.
 */
import { odata } from "@azure/data-tables";
import { DAY_MS, dayOf, EVENT_TABLE } from "./event-layout.ts";
import type { Registry } from "./tables.ts";

/**
 * Delete this registry's event tables whose whole day ended more than
 * `retentionDays` days before `now`; returns their names, oldest first.
 */
export async function pruneEvents(
  registry: Registry,
  now: Date,
  retentionDays: number,
): Promise<string[]> {
  if (!Number.isInteger(retentionDays) || retentionDays < 1)
    throw new RangeError(
      `event retention must be a whole number of days, at least 1: ${retentionDays}`,
    );
  const base = `${registry.prefix}${EVENT_TABLE}`;
  const kept = `${base}${dayOf(now.getTime() - retentionDays * DAY_MS)}`;
  const dayTableName = new RegExp(`^${base}\\d{8}$`);
  const past: string[] = [];
  const tables = registry.service.listTables({
    queryOptions: { filter: odata`TableName ge ${`${base}0`} and TableName lt ${kept}` },
  });
  for await (const table of tables) {
    if (table.name !== undefined && dayTableName.test(table.name)) past.push(table.name);
  }
  past.sort();
  // deleteTable ignores a table already gone, so two pruners at once do no harm.
  for (const name of past) await registry.service.deleteTable(name);
  return past;
}
