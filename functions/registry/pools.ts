/**
 * Pool records. The connection string is a secret: it is kept here for the
 * control plane's own use and never rendered by the API (see routes/views.ts).
 */
import { z } from "zod";
import { ContainerName, PoolName, Timestamp } from "../../contract/names.ts";
import { PoolHealth, PoolUsage } from "../../contract/pool.ts";
import { type Codec, type RecordTable, recordTable } from "./records.ts";
import type { Registry } from "./tables.ts";

export const PoolRecord = z.object({
  name: PoolName,
  account: z.string().min(1),
  /** Blob service endpoint without a trailing slash. */
  blobEndpoint: z.string().min(1),
  container: ContainerName,
  authKind: z.literal("connectionString"),
  connectionString: z.string().min(1),
  health: PoolHealth,
  usage: PoolUsage,
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type PoolRecord = z.infer<typeof PoolRecord>;

export const poolCodec: Codec<PoolRecord> = {
  rowKey: "pool",
  name: (p) => p.name,
  encode: ({ name: _name, ...properties }) => properties,
  decode: (name, p) => PoolRecord.parse({ ...p, name }),
};

export function pools(registry: Registry): RecordTable<PoolRecord> {
  return recordTable(registry.pools, poolCodec);
}
