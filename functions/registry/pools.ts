/**
 * Pool records. A connection string is a secret (it carries the account key
 * or a SAS): it is kept here for the control plane's own use, never rendered
 * by the API (see storage/pool-auth.ts), and never stored in the clear. Its
 * row holds it sealed (sealed.ts) under a key the registry does not hold, in
 * `sealedConnectionString`; rows written before sealing hold it plainly in
 * `connectionString`, are read as they are, and are sealed by their next
 * write or by `sealPoolRows` at start. A managed-identity pool holds no
 * secret at all, only its account URL: the control plane's identity is the
 * credential.
 *
 * A row sealed with a key this process does not hold does not decode: reads
 * of it fail with a `SealedSecretError` naming the pool and the key, rather
 * than hand on a record that could be written back without its secret. A
 * listing that meets one fails whole, so nothing acts on a partial view of
 * the pools (a repair would take the unreadable pool for one that is gone).
 */
import { odata } from "@azure/data-tables";
import { z } from "zod";
import { ContainerName, PoolName, Timestamp } from "../../contract/names.ts";
import { PoolAnnotations, PoolHealth, PoolRelease, PoolUsage } from "../../contract/pool.ts";
import { packJson, unpackJson } from "./fields.ts";
import { type Codec, type RecordTable, recordTable } from "./records.ts";
import { isRegistryError } from "./registry-error.ts";
import { listRows } from "./rows.ts";
import { seal, SealedSecretError, sealedKeyId, unseal } from "./sealed.ts";
import { sealingKeys } from "./sealing-keys.ts";
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
  encode: ({ name, annotations, release, ...properties }) => {
    const { connectionString, ...rest } = properties as Record<string, unknown>;
    return {
      ...rest,
      ...(typeof connectionString === "string"
        ? { sealedConnectionString: sealConnectionString(name, connectionString) }
        : {}),
      annotations: packJson("annotations", annotations),
      ...(release === undefined ? {} : { release: packJson("release", release) }),
    };
  },
  decode: (name, p) => {
    const { sealedConnectionString: sealed, ...properties } = p;
    return PoolRecord.parse({
      ...properties,
      ...(typeof sealed === "string" ? { connectionString: openConnectionString(name, sealed) } : {}),
      name,
      annotations: p.annotations === undefined ? {} : unpackJson(p.annotations),
      ...(p.release === undefined ? {} : { release: unpackJson(p.release) }),
    });
  },
};

export function pools(registry: Registry): RecordTable<PoolRecord> {
  return recordTable(registry.pools, poolCodec);
}

/**
 * Seal what is not sealed under the current key: rows written before
 * sealing existed, and rows sealed with a previous key (rotation). Run at
 * start; each row is rewritten with its ETag, so a row another writer
 * changed meanwhile is left to that write, which sealed it. Rows that
 * cannot be sealed now (no key, or sealed with a key this process lacks)
 * are returned with the reason, not thrown: the rest still get sealed.
 */
export async function sealPoolRows(
  registry: Registry,
): Promise<{ sealed: string[]; failed: Array<{ pool: string; error: Error }> }> {
  const current = sealingKeys()?.current.id;
  const table = pools(registry);
  const sealed: string[] = [];
  const failed: Array<{ pool: string; error: Error }> = [];
  for (const { value: row } of await listRows(registry.pools, odata`RowKey eq ${poolCodec.rowKey}`)) {
    const name = String(row.partitionKey);
    const stored = row.sealedConnectionString;
    const due =
      typeof row.connectionString === "string" ||
      (typeof stored === "string" && (current === undefined || sealedKeyId(stored) !== current));
    if (!due) continue;
    try {
      const read = await table.get(name);
      if (!read) continue;
      await table.replace(read.value, read.etag);
      sealed.push(name);
    } catch (err) {
      if (isRegistryError(err, "Conflict") || isRegistryError(err, "Missing")) continue;
      if (!(err instanceof SealedSecretError)) throw err;
      failed.push({ pool: name, error: err });
    }
  }
  return { sealed, failed };
}

/**
 * Throw what storing `connectionString` for `pool` would (this process
 * holds no sealing key), so that registration fails before it touches the
 * pool's account.
 */
export function checkSealable(pool: string, connectionString: string): void {
  sealConnectionString(pool, connectionString);
}

/** What a pool's sealed connection string is bound to: it opens in this pool's row only. */
function contextOf(pool: string): string {
  return `pools/${pool}/connectionString`;
}

function subjectOf(pool: string): string {
  return `pool ${pool}'s connection string`;
}

function sealConnectionString(pool: string, connectionString: string): string {
  return seal(connectionString, contextOf(pool), sealingKeys(), subjectOf(pool));
}

function openConnectionString(pool: string, sealed: string): string {
  return unseal(sealed, contextOf(pool), sealingKeys(), subjectOf(pool));
}
