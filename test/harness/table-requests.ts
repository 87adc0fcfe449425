/**
 * What the control plane asks of the Table service, seen from a fault
 * proxy in front of Azurite's Table endpoint: each request's table and
 * OData filter, and whether that filter keeps the query within one
 * partition. Azurite answers an unbounded filter as readily as a bounded
 * one; Azure scans the table for it, so tests check the filter itself.
 */
import type { FaultProxy } from "./fault-proxy.ts";

export interface TableRequest {
  method: string;
  /** The table a request is about, or `$batch` / `Tables` for service-level paths. */
  table: string;
  /** `$filter`, when the request is a query. */
  filter: string | undefined;
}

/** Start recording every request through `proxy`; the array fills as they arrive. */
export function recordTableRequests(proxy: FaultProxy): { requests: TableRequest[]; stop(): void } {
  const requests: TableRequest[] = [];
  const stop = proxy.onRequest((req) => {
    const last = decodeURIComponent(req.url.pathname.split("/").at(-1) ?? "");
    requests.push({
      method: req.method,
      table: last.replace(/\(.*\)$/, ""),
      filter: req.url.searchParams.get("$filter") ?? undefined,
    });
  });
  return { requests, stop };
}

/**
 * The one PartitionKey a filter confines its query to, or undefined when it
 * may read more than one partition: it must be a plain conjunction (no
 * `or`, `not` or parentheses outside string literals) with a
 * `PartitionKey eq '...'` term.
 */
export function partitionOf(filter: string | undefined): string | undefined {
  if (filter === undefined) return undefined;
  const literals: string[] = [];
  const shape = filter.replace(/'((?:[^']|'')*)'/g, (_, text: string) => {
    literals.push(text.replaceAll("''", "'"));
    return `'${literals.length - 1}'`;
  });
  if (/\b(?:or|not)\b|[()]/i.test(shape)) return undefined;
  const m = /(?:^|\band\s+)PartitionKey\s+eq\s+'(\d+)'/.exec(shape);
  return m ? literals[Number(m[1])] : undefined;
}
