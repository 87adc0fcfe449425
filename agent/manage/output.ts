/**
 * What management commands print: aligned tables and `label: value` blocks
 * for people, the API's JSON as is for scripts (`--json`). Everything goes
 * to stdout; errors go to stderr elsewhere.
 */

/** Write lines to stdout. */
export function print(...lines: string[]): void {
  process.stdout.write(lines.map((l) => `${l}\n`).join(""));
}

/** The API's answer unchanged, indented: `JSON.parse` of it is the contract type. */
export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/**
 * An aligned table with an upper-case header; `empty` is printed instead
 * when there are no rows, so an empty list does not look like a failure.
 */
export function printTable(headers: string[], rows: string[][], empty: string): void {
  if (rows.length === 0) {
    print(empty);
    return;
  }
  const all = [headers.map((h) => h.toUpperCase()), ...rows];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  // The last column is not padded: trailing blanks only get in the way of grep and diff.
  const line = (r: string[]) =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  print(...all.map(line));
}

/** `label:  value` lines, values aligned. */
export function printFields(fields: Array<[string, string]>): void {
  const width = Math.max(...fields.map(([label]) => label.length)) + 1;
  print(...fields.map(([label, value]) => `${`${label}:`.padEnd(width)}  ${value}`.trimEnd()));
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"] as const;

/** 8589934592 -> "8 GiB", 1610612736 -> "1.5 GiB" (binary units, at most 2 decimals). */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number(value.toFixed(2))} ${UNITS[unit]}`;
}

/** ISO 8601 to the second: milliseconds add noise to a table. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "-";
  return iso.replace(/\.\d+Z$/, "Z");
}

/** "12s ago", "3h ago", "in 23h": for heartbeats and expiries, where distance matters. */
export function formatAge(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const ms = Date.parse(iso) - now;
  const span = Math.abs(ms) / 1000;
  const text =
    span < 60
      ? `${Math.floor(span)}s`
      : span < 3600
        ? `${Math.floor(span / 60)}m`
        : span < 86_400
          ? `${Math.floor(span / 3600)}h`
          : `${Math.floor(span / 86_400)}d`;
  return ms > 0 ? `in ${text}` : `${text} ago`;
}

/** Lists in a table cell: comma-joined, `-` when empty. */
export function formatList(items: readonly string[]): string {
  return items.length === 0 ? "-" : items.join(",");
}
