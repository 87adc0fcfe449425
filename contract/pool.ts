/**
 * Pools: a storage account and container that hold replicas (page blobs).
 */
import { z } from "zod";
import { ContainerName, PoolName, Timestamp } from "./names.ts";

/** Health computed from agents' reports and probes (DESIGN.md, "Health"). */
export const POOL_HEALTH = ["GOOD", "SUSPECT", "BAD", "UNKNOWN"] as const;
export const PoolHealth = z.enum(POOL_HEALTH);
export type PoolHealth = z.infer<typeof PoolHealth>;

/** Usage during replacement (DESIGN.md, "Health, repair, replacement"). */
export const POOL_USAGE = [
  "IN_USE",
  "RELEASING",
  "RELEASED",
  "REMOVING",
  "REMOVED",
  "FAILED",
] as const;
export const PoolUsage = z.enum(POOL_USAGE);
export type PoolUsage = z.infer<typeof PoolUsage>;

/**
 * How the control plane reaches the pool's account. Only connection strings
 * exist so far; managed identity (Azure) will be another `kind` of this union.
 */
export const PoolAuthCreate = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("connectionString"),
    connectionString: z.string().min(1).max(4096),
  }),
]);

/** `POST /api/v1/pools` */
export const PoolCreate = z.strictObject({
  name: PoolName,
  container: ContainerName.default("pagedisk"),
  auth: PoolAuthCreate,
});
export type PoolCreate = z.infer<typeof PoolCreate>;

/** A pool as the API shows it: the connection string has its secrets masked. */
export const Pool = z.object({
  name: PoolName,
  account: z.string(),
  blobEndpoint: z.string(),
  container: ContainerName,
  auth: z.object({
    kind: z.literal("connectionString"),
    /** `AccountKey` and `SharedAccessSignature` values replaced by `***`. */
    connectionString: z.string(),
  }),
  health: PoolHealth,
  usage: PoolUsage,
  createdAt: Timestamp,
});
export type Pool = z.infer<typeof Pool>;

export const PoolList = z.object({ items: z.array(Pool) });
export type PoolList = z.infer<typeof PoolList>;
