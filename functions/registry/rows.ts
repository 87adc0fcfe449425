/**
 * Conditional row operations on one table. Every state change goes through
 * `insertRow` (fails if the key exists), `replaceRow` or `deleteRow` (fail
 * unless the row still has the ETag that was read): there is no
 * unconditional write in the control plane.
 */
import type { TableClient, TableEntity } from "@azure/data-tables";
import { restStatus } from "../rest-error.ts";
import { RegistryError, type RegistryErrorCode } from "./registry-error.ts";

/** Any entity as stored; properties are validated by each table's decoder. */
export type Row = TableEntity<Record<string, unknown>>;

/** A row together with the ETag it was read at. */
export interface Read<T> {
  value: T;
  etag: string;
}

/** Point read; `undefined` when the row does not exist. */
export async function readRow(
  table: TableClient,
  partitionKey: string,
  rowKey: string,
): Promise<Read<Row> | undefined> {
  try {
    const entity = await table.getEntity<Record<string, unknown>>(partitionKey, rowKey);
    const { etag, timestamp: _timestamp, "odata.metadata": _metadata, ...row } = entity;
    return { value: row as Row, etag };
  } catch (err) {
    if (restStatus(err) === 404) return undefined;
    throw err;
  }
}

/** Insert; `RegistryError("Exists")` when the key is taken. Returns the new ETag. */
export async function insertRow(table: TableClient, row: Row): Promise<string> {
  try {
    const res = await table.createEntity(row);
    return etagOf(res);
  } catch (err) {
    throw translate(err, table, row, { 409: "Exists" });
  }
}

/** Replace the whole row if it still has `etag`; `RegistryError("Conflict")` otherwise. Returns the new ETag. */
export async function replaceRow(table: TableClient, row: Row, etag: string): Promise<string> {
  try {
    const res = await table.updateEntity(row, "Replace", { etag });
    return etagOf(res);
  } catch (err) {
    throw translate(err, table, row, { 412: "Conflict", 404: "Missing" });
  }
}

/** Delete the row if it still has `etag`; `RegistryError("Conflict")` or `("Missing")` otherwise. */
export async function deleteRow(
  table: TableClient,
  partitionKey: string,
  rowKey: string,
  etag: string,
): Promise<void> {
  try {
    await table.deleteEntity(partitionKey, rowKey, { etag });
  } catch (err) {
    throw translate(err, table, { partitionKey, rowKey }, { 412: "Conflict", 404: "Missing" });
  }
}

/** Every row matching an OData filter (build it with `odata`), in key order. */
export async function listRows(table: TableClient, filter?: string): Promise<Array<Read<Row>>> {
  const rows: Array<Read<Row>> = [];
  const entities = table.listEntities<Record<string, unknown>>(
    filter ? { queryOptions: { filter } } : {},
  );
  for await (const entity of entities) {
    const { etag, timestamp: _timestamp, "odata.metadata": _metadata, ...row } = entity;
    rows.push({ value: row as Row, etag });
  }
  return rows;
}

function etagOf(res: { etag?: string }): string {
  // The service always sends an ETag on writes; without one no conditional write could follow.
  if (!res.etag) throw new Error("Table Storage answered a write without an ETag");
  return res.etag;
}

function translate(
  err: unknown,
  table: TableClient,
  key: { partitionKey: string; rowKey: string },
  meaning: Partial<Record<number, RegistryErrorCode>>,
): unknown {
  const status = restStatus(err);
  const code = status === undefined ? undefined : meaning[status];
  if (!code) return err;
  return new RegistryError(code, { table: table.tableName, ...key }, { cause: err });
}
