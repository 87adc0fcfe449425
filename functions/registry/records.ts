/**
 * A table of named records (one row per pool, volume or node): typed reads
 * and conditional writes over `rows.ts`, with each kind's codec deciding
 * how a record maps to properties. Rows are validated on the way in, so a
 * corrupt or foreign row fails loudly instead of flowing into decisions.
 */
import { odata, type TableClient } from "@azure/data-tables";
import { deleteRow, insertRow, listRows, type Read, readRow, replaceRow } from "./rows.ts";

export interface Codec<T> {
  /** RowKey shared by every record of this kind (the name is the PartitionKey). */
  readonly rowKey: string;
  name(record: T): string;
  /** Properties to store, PartitionKey and RowKey excluded. */
  encode(record: T): Record<string, unknown>;
  /** Inverse of `encode`; throws when the row is not a valid record. */
  decode(name: string, properties: Record<string, unknown>): T;
}

export interface RecordTable<T> {
  get(name: string): Promise<Read<T> | undefined>;
  /** Every record, or those matching an OData `filter` (build it with `odata`). */
  list(filter?: string): Promise<Array<Read<T>>>;
  /** `RegistryError("Exists")` when the name is taken. Returns the ETag. */
  insert(record: T): Promise<string>;
  /** `RegistryError("Conflict")` unless the row still has `etag`. Returns the new ETag. */
  replace(record: T, etag: string): Promise<string>;
  /** `RegistryError("Conflict")` unless the row still has `etag`. */
  remove(name: string, etag: string): Promise<void>;
}

export function recordTable<T>(table: TableClient, codec: Codec<T>): RecordTable<T> {
  const toRow = (record: T) => ({
    ...codec.encode(record),
    partitionKey: codec.name(record),
    rowKey: codec.rowKey,
  });
  const fromRow = ({ value, etag }: Read<Record<string, unknown>>): Read<T> => {
    const { partitionKey, rowKey: _rowKey, ...properties } = value;
    return { value: codec.decode(String(partitionKey), properties), etag };
  };
  return {
    async get(name) {
      const row = await readRow(table, name, codec.rowKey);
      return row && fromRow(row);
    },
    async list(filter) {
      const kind = odata`RowKey eq ${codec.rowKey}`;
      const rows = await listRows(table, filter ? `${kind} and (${filter})` : kind);
      return rows.map(fromRow);
    },
    insert: (record) => insertRow(table, toRow(record)),
    replace: (record, etag) => replaceRow(table, toRow(record), etag),
    remove: (name, etag) => deleteRow(table, name, codec.rowKey, etag),
  };
}
