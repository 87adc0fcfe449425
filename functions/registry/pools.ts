/**
 * Pool records. A connection string is a secret: it is kept here for the
 * control plane's own use and never rendered by the API (see
 * storage/pool-auth.ts). A managed-identity pool holds no secret at all,
 * only its account URL: the control plane's identity is the credential.
 */
import { z } from "zod";
import { ContainerName, PoolName, Timestamp } from "../../contract/names.ts";
import { PoolAnnotations, PoolHealth, PoolRelease, PoolUsage } from "../../contract/pool.ts";
import { packJson, unpackJson } from "./fields.ts";
import { type Codec, type RecordTable, recordTable } from "./records.ts";
import type { Registry } from "./tables.ts";

const PoolFields = {
  name: PoolName,
  account: z.string().min(1),
  /** Blob service endpoint without a trailing slash. */
  blobEndpoint: z.string().min(1),
  container: ContainerName,
  health: PoolHealth,
  /** When `health` last changed, and why it is what it is (health/pool-health.ts). */
  healthSince: Timestamp.optional(),
  healthReason: z.string().max(1024).optional(),
  /** First failed probe of the current run of failures; absent while probes succeed. */
  unreachableSince: Timestamp.optional(),
  usage: PoolUsage,
  /** Operator annotations; `{}` on rows written before they existed. */
  annotations: PoolAnnotations,
  /** The latest release of its replicas (health/replacement.ts); absent until one starts. */
  release: PoolRelease.optional(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
};

export const PoolRecord = z.discriminatedUnion("authKind", [
  z.object({
    ...PoolFields,
    authKind: z.literal("connectionString"),
    connectionString: z.string().min(1),
  }),
  z.object({
    ...PoolFields,
    authKind: z.literal("managedIdentity"),
    /** Blob service endpoint as registered, reached with the control plane's token credential. */
    accountUrl: z.string().min(1),
  }),
]);
export type PoolRecord = z.infer<typeof PoolRecord>;

export const poolCodec: Codec<PoolRecord> = {
  rowKey: "pool",
  name: (p) => p.name,
  encode: ({ name: _name, annotations, release, ...properties }) => ({
    ...properties,
    annotations: packJson("annotations", annotations),
    ...(release === undefined ? {} : { release: packJson("release", release) }),
  }),
  decode: (name, p) =>
    PoolRecord.parse({
      ...p,
      name,
      annotations: p.annotations === undefined ? {} : unpackJson(p.annotations),
      ...(p.release === undefined ? {} : { release: unpackJson(p.release) }),
    }),
};

export function pools(registry: Registry): RecordTable<PoolRecord> {
  return recordTable(registry.pools, poolCodec);
}
