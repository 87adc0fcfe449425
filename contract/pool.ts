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
 * What an operator can say about a pool (after Dell's drive annotations):
 *
 * - `removal: "ready"`: the operator is ready for the pool to be removed
 *   once it is RELEASED;
 * - `health: "bad" | "suspect"`: overrides the computed health (a pool
 *   known to be failing is repaired away from before agents notice);
 * - `action: "remove"` starts the release of its replicas, `action: "add"`
 *   puts a RELEASED or FAILED pool back IN_USE.
 */
export const PoolAnnotations = z.strictObject({
  removal: z.literal("ready").optional(),
  health: z.enum(["bad", "suspect"]).optional(),
  action: z.enum(["add", "remove"]).optional(),
});
export type PoolAnnotations = z.infer<typeof PoolAnnotations>;

/** Host names that are this machine: the only places plain HTTP is allowed (Azurite). */
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

/**
 * Why `text` is not a usable storage service endpoint (`https://acct.blob.core.windows.net`,
 * or Azurite's `http://127.0.0.1:10000/devstoreaccount1`), or undefined if it is one.
 * Plain HTTP only on loopback; no query (a SAS there would be a secret), no
 * user info, no fragment.
 */
export function accountUrlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "not a URL";
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && LOOPBACK.has(url.hostname)))
    return "must be https (plain http only on 127.0.0.1, localhost or [::1])";
  if (url.username || url.password) return "must not carry a user name or password";
  if (url.search || url.hash) return "must not carry a query or fragment (no SAS here)";
  return undefined;
}

/** A storage service endpoint URL; see `accountUrlProblem`. */
export const AccountUrl = z
  .string()
  .max(2048)
  .superRefine((text, ctx) => {
    const problem = accountUrlProblem(text);
    if (problem) ctx.addIssue({ code: "custom", message: `account URL ${problem}` });
  });

/**
 * How the control plane reaches the pool's account: a connection string
 * (account key or SAS), or the control plane's own managed identity
 * (Entra ID) on the account's blob endpoint, where no key exists at all.
 */
export const PoolAuthCreate = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("connectionString"),
    connectionString: z.string().min(1).max(4096),
  }),
  z.strictObject({
    kind: z.literal("managedIdentity"),
    /** Blob service endpoint of the account, e.g. `https://acct.blob.core.windows.net`. */
    accountUrl: AccountUrl,
  }),
]);
export type PoolAuthCreate = z.infer<typeof PoolAuthCreate>;

/** `POST /api/v1/pools` */
export const PoolCreate = z.strictObject({
  name: PoolName,
  container: ContainerName.default("pagedisk"),
  auth: PoolAuthCreate,
});
export type PoolCreate = z.infer<typeof PoolCreate>;

/** A pool's credentials as the API shows them: secrets masked, the identity's endpoint as is. */
export const PoolAuth = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("connectionString"),
    /** `AccountKey` and `SharedAccessSignature` values replaced by `***`. */
    connectionString: z.string(),
  }),
  z.object({
    kind: z.literal("managedIdentity"),
    accountUrl: z.string(),
  }),
]);
export type PoolAuth = z.infer<typeof PoolAuth>;

/** A pool as the API shows it: the connection string has its secrets masked. */
export const Pool = z.object({
  name: PoolName,
  account: z.string(),
  blobEndpoint: z.string(),
  container: ContainerName,
  auth: PoolAuth,
  health: PoolHealth,
  usage: PoolUsage,
  annotations: PoolAnnotations,
  createdAt: Timestamp,
});
export type Pool = z.infer<typeof Pool>;

export const PoolList = z.object({ items: z.array(Pool) });
export type PoolList = z.infer<typeof PoolList>;
