/**
 * Pools: a storage account (and a container name, which its replicas'
 * containers are named after) that hold replicas (page blobs).
 */
import { z } from "zod";
import { ContainerName, PoolName, Timestamp, VolumeName } from "./names.ts";
import { ReplicaId } from "./volume.ts";

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

/**
 * `PATCH /api/v1/pools/{name}/annotations`: the annotations to set, `null`
 * to remove one; keys left out stay as they are. `action` is a verb, not a
 * state: it is acted on by this request and never stored (the
 * `pool-annotated` event records it).
 */
export const PoolAnnotationsPatch = z
  .strictObject({
    removal: z.literal("ready").nullable().optional(),
    health: z.enum(["bad", "suspect"]).nullable().optional(),
    action: z.enum(["add", "remove"]).optional(),
  })
  .refine((p) => Object.keys(p).length > 0, {
    message: "nothing to change: give removal, health or action",
    when: (payload) => payload.issues.length === 0,
  });
export type PoolAnnotationsPatch = z.infer<typeof PoolAnnotationsPatch>;

/**
 * Where one replica on a pool being released stands:
 *
 * - PENDING: its move is not started yet (or will be retried next pass);
 * - MOVING: a replica replacing it is being built on another pool;
 * - WAITING: as MOVING, but the volume's writer is changing (attach, detach, failover);
 * - MOVED: no longer on the pool (moved, or its volume was deleted);
 * - FAILED: it cannot be moved (`message` says why).
 */
export const RELEASE_STATUSES = ["PENDING", "MOVING", "WAITING", "MOVED", "FAILED"] as const;
export const ReleaseStatus = z.enum(RELEASE_STATUSES);
export type ReleaseStatus = z.infer<typeof ReleaseStatus>;

/** One replica of a volume on a pool being released. */
export const ReleaseEntry = z.object({
  volume: VolumeName,
  replica: ReplicaId,
  status: ReleaseStatus,
  /** Percent done of the replica taking its place (100 once MOVED). */
  progress: z.number().min(0).max(100),
  message: z.string().max(1024).optional(),
});
export type ReleaseEntry = z.infer<typeof ReleaseEntry>;

/**
 * The release of a pool's replicas, from `action=remove` (or `POST
 * .../release`) on. `entries` lists at most `MAX_RELEASE_ENTRIES`
 * replicas (those still on the pool first); `counts` counts them all.
 */
export const PoolRelease = z.object({
  startedAt: Timestamp,
  /** When the pool became RELEASED or FAILED. */
  finishedAt: Timestamp.optional(),
  /** When the pool was put back IN_USE (`action=add`), ending this release. */
  stoppedAt: Timestamp.optional(),
  /** Overall percent done: every replica's progress, MOVED counting 100. */
  progress: z.number().min(0).max(100),
  /** Where the release stands, in words. */
  message: z.string().max(1024),
  counts: z.record(ReleaseStatus, z.int().min(0)),
  entries: z.array(ReleaseEntry),
  /** Entries left out of `entries` to keep the record small. */
  omitted: z.int().min(0),
});
export type PoolRelease = z.infer<typeof PoolRelease>;

/** Entries a pool's release keeps (the pool row holds it, within Table Storage's property limit). */
export const MAX_RELEASE_ENTRIES = 100;

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

/**
 * A pool's own container. Its replicas live in containers named
 * `<container>-<replica id>` (12 hex digits), so the name leaves room for
 * that suffix (at most 50 characters) and does not itself look like a
 * replica container of another pool in the same account.
 */
export const PoolContainerName = ContainerName.refine((name) => name.length <= 50, {
  error: "a pool's container name may have at most 50 characters: its replicas' containers add 13",
}).refine((name) => !/-[0-9a-f]{12}$/.test(name), {
  error: "a pool's container name may not end with '-' and 12 hex digits: that is how its replicas' containers are named",
});

/** `POST /api/v1/pools` */
export const PoolCreate = z.strictObject({
  name: PoolName,
  container: PoolContainerName.default("pagedisk"),
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
  /** When `health` last changed; absent before the first probe. */
  healthSince: Timestamp.optional(),
  /** Why the pool has its health, in words (a probe's error, a reported failure, an annotation). */
  healthReason: z.string().optional(),
  usage: PoolUsage,
  annotations: PoolAnnotations,
  /** The latest release of its replicas; absent for a pool never released. */
  release: PoolRelease.optional(),
  createdAt: Timestamp,
});
export type Pool = z.infer<typeof Pool>;

export const PoolList = z.object({ items: z.array(Pool) });
export type PoolList = z.infer<typeof PoolList>;
