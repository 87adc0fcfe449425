/**
 * The control plane's configuration, read once from the environment (app
 * settings in Azure, the shell locally). Anything missing or malformed
 * fails at start, with the setting's name, rather than at first use.
 */
import { accountUrlProblem } from "../contract/pool.ts";
import { resolve } from "node:path";
import { DEFAULT_DETACH_DRAIN_MS, MAX_DETACH_DRAIN_MS, type PoolAccountKeys } from "./control-plane.ts";
import { DEFAULT_REPAIR_POLICY, type RepairPolicy } from "./health/repair-policy.ts";
import { DEFAULT_SWEEP_POLICY, type SweepPolicy } from "./health/sweep.ts";
import { DEFAULT_RATE_LIMITS, type RateLimit, type RateLimits } from "./http/rate-limit.ts";
import { DEFAULT_ORPHAN_GRACE_MS } from "./lifecycle/reconcile-blobs.ts";
import { DEFAULT_EVENT_RETENTION_DAYS } from "./registry/events.ts";
import { type SealingKeys, SECRETS_KEY_SETTING, sealingKeysFrom } from "./registry/sealing-keys.ts";
import { type AgentFiles, DEFAULT_AGENT_FILES } from "./routes/agent-download.ts";
import {
  MAX_REPLICA_SAS_LIFETIME_MS,
  MIN_REPLICA_SAS_LIFETIME_MS,
} from "./storage/replica-sas.ts";

export interface Settings {
  /** The registry's storage account (Table service). */
  registry: RegistryAccountSetting;
  /**
   * Connection string of the account holding the liveness table (with its
   * key: agents' Table SAS are signed with it); undefined means the
   * registry's own, which then must be reached by connection string.
   */
  livenessConnectionString: string | undefined;
  /** Prefix of every registry table name. */
  tablePrefix: string;
  /** An admin key accepted besides those in the registry; unset locally. */
  adminKey: string | undefined;
  sweep: SweepPolicy;
  /** What `/api/agent/*` serves. */
  agentFiles: AgentFiles;
  /** How long a writer's replica SAS is valid (replica-sas.ts). */
  replicaSasLifetimeMs: number;
  /** A blob younger than this is a `recent` orphan, never deleted (lifecycle/reconcile-blobs.ts). */
  orphanGraceMs: number;
  /** Longest a detach waits for the owner to drain the volume (arbiter/detach-drain.ts). */
  detachDrainMs: number;
  /** Days of events listed and kept (registry/event-retention.ts). */
  eventRetentionDays: number;
  /** Per-instance rate limits on calls that change something (http/rate-limit.ts). */
  rateLimits: RateLimits;
  /** Whether pools may be registered with an account key or SAS (lifecycle/register-pool.ts). */
  poolAccountKeys: PoolAccountKeys;
  /** The keys that seal pool connection strings in the registry (registry/sealing-keys.ts). */
  sealingKeys: SealingKeys | undefined;
}

/**
 * Settings from `env`:
 *
 * - the registry's account, one of (see `registryAccountFrom`):
 *   `PAGEDISK_REGISTRY_ACCOUNT_URL` (Table endpoint, under the managed identity),
 *   `PAGEDISK_REGISTRY_CONNECTION_STRING`, else the Function App's own
 *   `AzureWebJobsStorage` or `AzureWebJobsStorage__tableServiceUri` / `__accountName`
 * - `PAGEDISK_LIVENESS_CONNECTION_STRING`: the account of the liveness table,
 *   where agents write their heartbeats with a Table SAS (so its key is
 *   needed); default the registry's connection string
 * - `PAGEDISK_TABLE_PREFIX` (default none)
 * - `PAGEDISK_ADMIN_KEY` (optional)
 * - `PAGEDISK_HEARTBEAT_INTERVAL_SECONDS` (default 2): how often agents beat;
 *   `PAGEDISK_SUSPECT_AFTER_SECONDS`, `PAGEDISK_LOST_AFTER_SECONDS` (default
 *   4 and 8): silence before a node is SUSPECT, then LOST
 * - pool health and repair (health/repair-policy.ts):
 *   `PAGEDISK_POOL_SUSPECT_WINDOW_SECONDS` (default 60): a failure reported
 *   against a pool keeps it SUSPECT this long, so no resync starts;
 *   `PAGEDISK_POOL_BAD_AFTER_SECONDS` (default 30): probes failing this long
 *   make it BAD; `PAGEDISK_POOL_PERMANENT_AFTER_SECONDS` (default 300): BAD
 *   this long, its OFFLINE replicas are rebuilt on another pool;
 *   `PAGEDISK_POOL_PROBE_TIMEOUT_SECONDS` (default 5): the probe's deadline;
 *   `PAGEDISK_REPORT_GRACE_SECONDS` (default 5): a writer's report of a
 *   failed copy counts from this long after the copy was ordered
 * - `PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS`: how long the SAS handed to a
 *   volume's writer is valid (default and most 900, least 60)
 * - `PAGEDISK_ORPHAN_GRACE_SECONDS` (default 600): a blob no volume claims
 *   that is younger than this may be a creation in flight; it is reported
 *   as `recent` and not deleted
 * - `PAGEDISK_DETACH_DRAIN_SECONDS` (default 15, at most 45): how long a
 *   detach waits for the volume's owner to say it has drained and closed it
 *   before the leases are dropped anyway
 * - `PAGEDISK_EVENT_RETENTION_DAYS` (default 30, at least 1): events older
 *   than this many days are no longer listed, and their day's table may be
 *   deleted
 * - rate limits on calls that change something, per instance (http/rate-limit.ts):
 *   `PAGEDISK_RATE_LIMIT_NODE_PER_SECOND` and `PAGEDISK_RATE_LIMIT_NODE_BURST`
 *   (default 2 and 120) for each node; `PAGEDISK_RATE_LIMIT_KEY_PER_SECOND` and
 *   `PAGEDISK_RATE_LIMIT_KEY_BURST` (default 20 and 300) for each admin key
 *   and join token
 * - `PAGEDISK_POOL_ACCOUNT_KEYS` (`refuse` or `allow`, default refuse):
 *   whether a pool may be registered with a connection string, which carries
 *   an account key or SAS; refused, pools use the managed identity. `allow`
 *   needs `PAGEDISK_SECRETS_KEY`
 * - `PAGEDISK_SECRETS_KEY`: 32 random bytes in base64 (or a Key Vault
 *   reference that App Service resolves to them) sealing pool connection
 *   strings in the registry; `PAGEDISK_SECRETS_KEY_PREVIOUS`: earlier keys,
 *   comma-separated, that open what they sealed until a start re-seals it
 * - `PAGEDISK_AGENT_BUNDLE`, `PAGEDISK_INSTALL_SCRIPT`: files served at
 *   `/api/agent/pagedisk.mjs` and `/api/agent/install.sh` (default the
 *   repository's `dist/pagedisk.mjs` and `infra/install-agent.sh`)
 */
export function settingsFrom(env: Record<string, string | undefined>): Settings {
  const registry = registryAccountFrom(env);
  const livenessConnectionString = env.PAGEDISK_LIVENESS_CONNECTION_STRING || undefined;
  if (livenessConnectionString === undefined && !("connectionString" in registry)) {
    throw new Error(
      "set PAGEDISK_LIVENESS_CONNECTION_STRING: agents write their heartbeats to a liveness table with a Table SAS, which is signed with an account key, and the registry is reached with the managed identity (no key)",
    );
  }
  const heartbeatIntervalMs = seconds(
    env,
    "PAGEDISK_HEARTBEAT_INTERVAL_SECONDS",
    DEFAULT_SWEEP_POLICY.heartbeatIntervalMs,
  );
  const suspectAfterMs = seconds(
    env,
    "PAGEDISK_SUSPECT_AFTER_SECONDS",
    DEFAULT_SWEEP_POLICY.suspectAfterMs,
  );
  const lostAfterMs = seconds(env, "PAGEDISK_LOST_AFTER_SECONDS", DEFAULT_SWEEP_POLICY.lostAfterMs);
  if (lostAfterMs <= suspectAfterMs) {
    throw new Error(
      "PAGEDISK_LOST_AFTER_SECONDS must be longer than PAGEDISK_SUSPECT_AFTER_SECONDS",
    );
  }
  if (lostAfterMs <= 3 * heartbeatIntervalMs) {
    throw new Error(
      "PAGEDISK_LOST_AFTER_SECONDS must be longer than three PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: with no beat from any node for three intervals the sweeper judges nobody, and that must come before anyone is LOST",
    );
  }
  if (suspectAfterMs < 2 * heartbeatIntervalMs) {
    throw new Error(
      "PAGEDISK_SUSPECT_AFTER_SECONDS must be at least twice PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: one late beat must not make a node suspect",
    );
  }
  const replicaSasLifetimeMs = replicaSasLifetimeFrom(env);
  const sealingKeys = sealingKeysFrom(env);
  const poolAccountKeys = poolAccountKeysFrom(env, sealingKeys);
  return {
    registry,
    livenessConnectionString,
    tablePrefix: env.PAGEDISK_TABLE_PREFIX ?? "",
    adminKey: env.PAGEDISK_ADMIN_KEY || undefined,
    sweep: {
      ...DEFAULT_SWEEP_POLICY,
      heartbeatIntervalMs,
      suspectAfterMs,
      lostAfterMs,
      repair: repairPolicyFrom(env),
    },
    agentFiles: {
      // Resolved now, so a relative path means the same whatever the working directory becomes.
      bundle: resolve(env.PAGEDISK_AGENT_BUNDLE || DEFAULT_AGENT_FILES.bundle),
      installScript: resolve(env.PAGEDISK_INSTALL_SCRIPT || DEFAULT_AGENT_FILES.installScript),
    },
    replicaSasLifetimeMs,
    orphanGraceMs: seconds(env, "PAGEDISK_ORPHAN_GRACE_SECONDS", DEFAULT_ORPHAN_GRACE_MS),
    detachDrainMs: detachDrainFrom(env),
    eventRetentionDays: days(env, "PAGEDISK_EVENT_RETENTION_DAYS", DEFAULT_EVENT_RETENTION_DAYS),
    rateLimits: {
      ...DEFAULT_RATE_LIMITS,
      node: rateLimitFrom(env, "NODE", DEFAULT_RATE_LIMITS.node),
      key: rateLimitFrom(env, "KEY", DEFAULT_RATE_LIMITS.key),
    },
    poolAccountKeys,
    sealingKeys,
  };
}

/** `PAGEDISK_POOL_ACCOUNT_KEYS`: `refuse` unless set; `allow` only with a key to seal them. */
function poolAccountKeysFrom(
  env: Record<string, string | undefined>,
  sealingKeys: SealingKeys | undefined,
): PoolAccountKeys {
  const name = "PAGEDISK_POOL_ACCOUNT_KEYS";
  const value = env[name] || "refuse";
  if (value !== "refuse" && value !== "allow")
    throw new Error(`${name} must be refuse or allow, got ${value}`);
  if (value === "allow" && !sealingKeys) {
    throw new Error(
      `${name}=allow needs ${SECRETS_KEY_SETTING}: pool connection strings are stored sealed with it, never in the clear (32 random bytes in base64: openssl rand -base64 32)`,
    );
  }
  return value;
}

/** `PAGEDISK_RATE_LIMIT_<kind>_PER_SECOND` (above 0) and `_BURST` (a whole number, at least 1). */
function rateLimitFrom(
  env: Record<string, string | undefined>,
  kind: "NODE" | "KEY",
  fallback: RateLimit,
): RateLimit {
  const rateName = `PAGEDISK_RATE_LIMIT_${kind}_PER_SECOND`;
  const burstName = `PAGEDISK_RATE_LIMIT_${kind}_BURST`;
  const rate = env[rateName] ? Number(env[rateName]) : fallback.perSecond;
  if (!Number.isFinite(rate) || rate <= 0)
    throw new Error(`${rateName} must be a number of calls a second above 0, got ${env[rateName]}`);
  const burst = env[burstName] ? Number(env[burstName]) : fallback.burst;
  if (!Number.isInteger(burst) || burst < 1)
    throw new Error(`${burstName} must be a whole number of calls, at least 1, got ${env[burstName]}`);
  return { perSecond: rate, burst };
}

/** The `PAGEDISK_POOL_*` thresholds and the report grace; see `settingsFrom`. */
export function repairPolicyFrom(env: Record<string, string | undefined>): RepairPolicy {
  const d = DEFAULT_REPAIR_POLICY;
  return {
    suspectWindowMs: seconds(env, "PAGEDISK_POOL_SUSPECT_WINDOW_SECONDS", d.suspectWindowMs),
    badAfterMs: seconds(env, "PAGEDISK_POOL_BAD_AFTER_SECONDS", d.badAfterMs),
    permanentAfterMs: seconds(env, "PAGEDISK_POOL_PERMANENT_AFTER_SECONDS", d.permanentAfterMs),
    probeTimeoutMs: seconds(env, "PAGEDISK_POOL_PROBE_TIMEOUT_SECONDS", d.probeTimeoutMs),
    reportGraceMs: seconds(env, "PAGEDISK_REPORT_GRACE_SECONDS", d.reportGraceMs),
  };
}

/**
 * `PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS`, bounded: at least a minute, so
 * an agent that misses a fetch or two still holds a valid token; at most
 * 15 minutes, the longest a SAS may be left in a writer's hands (on a
 * managed-identity pool, how long a fenced node keeps its access).
 */
export function replicaSasLifetimeFrom(env: Record<string, string | undefined>): number {
  const name = "PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS";
  const ms = seconds(env, name, MAX_REPLICA_SAS_LIFETIME_MS);
  if (ms < MIN_REPLICA_SAS_LIFETIME_MS || ms > MAX_REPLICA_SAS_LIFETIME_MS) {
    throw new Error(
      `${name} must be between ${MIN_REPLICA_SAS_LIFETIME_MS / 1000} and ${MAX_REPLICA_SAS_LIFETIME_MS / 1000} seconds, got ${env[name]}`,
    );
  }
  return ms;
}

/** `PAGEDISK_DETACH_DRAIN_SECONDS`, at most MAX_DETACH_DRAIN_MS (the sweeper's patience with a DETACHING volume). */
function detachDrainFrom(env: Record<string, string | undefined>): number {
  const name = "PAGEDISK_DETACH_DRAIN_SECONDS";
  const ms = seconds(env, name, DEFAULT_DETACH_DRAIN_MS);
  if (ms > MAX_DETACH_DRAIN_MS) {
    throw new Error(
      `${name} must be at most ${MAX_DETACH_DRAIN_MS / 1000} seconds (a detach still waiting after a minute is finished by the sweeper without it), got ${env[name]}`,
    );
  }
  return ms;
}

function seconds(
  env: Record<string, string | undefined>,
  name: string,
  fallbackMs: number,
): number {
  const text = env[name];
  if (text === undefined || text === "") return fallbackMs;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`${name} must be a whole number of seconds, got ${text}`);
  return n * 1000;
}

function days(env: Record<string, string | undefined>, name: string, fallback: number): number {
  const text = env[name];
  if (text === undefined || text === "") return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`${name} must be a whole number of days, at least 1, got ${text}`);
  return n;
}

/**
 * Where the registry lives: a connection string (account key), or a Table
 * endpoint reached with the control plane's token credential (in Azure its
 * managed identity; no key exists then).
 */
export type RegistryAccountSetting = { connectionString: string } | { tableUrl: string };

/** Storage account names: 3-24 lowercase letters and digits. */
const ACCOUNT_NAME = /^[a-z0-9]{3,24}$/;

function registryAccountFrom(env: Record<string, string | undefined>): RegistryAccountSetting {
  const connectionString = env.PAGEDISK_REGISTRY_CONNECTION_STRING;
  const accountUrl = env.PAGEDISK_REGISTRY_ACCOUNT_URL;
  if (connectionString && accountUrl) {
    throw new Error(
      "set PAGEDISK_REGISTRY_ACCOUNT_URL (managed identity) or PAGEDISK_REGISTRY_CONNECTION_STRING (account key), not both",
    );
  }
  if (accountUrl) return { tableUrl: tableUrl("PAGEDISK_REGISTRY_ACCOUNT_URL", accountUrl) };
  if (connectionString) return { connectionString };
  // The Function App's own account, in the key-based or the identity-based form of the host.
  if (env.AzureWebJobsStorage) return { connectionString: env.AzureWebJobsStorage };
  const serviceUri = env.AzureWebJobsStorage__tableServiceUri;
  if (serviceUri)
    return { tableUrl: tableUrl("AzureWebJobsStorage__tableServiceUri", serviceUri) };
  const accountName = env.AzureWebJobsStorage__accountName;
  if (accountName) {
    if (!ACCOUNT_NAME.test(accountName))
      throw new Error(
        `AzureWebJobsStorage__accountName must be a storage account name (3-24 lowercase letters and digits), got ${accountName}`,
      );
    return { tableUrl: `https://${accountName}.table.core.windows.net` };
  }
  throw new Error(
    "no registry storage account: set PAGEDISK_REGISTRY_ACCOUNT_URL to its Table endpoint " +
      "(https://<account>.table.core.windows.net, reached with the managed identity, which needs " +
      "the Storage Table Data Contributor role) or PAGEDISK_REGISTRY_CONNECTION_STRING to a " +
      "connection string with its key (AzureWebJobsStorage, or AzureWebJobsStorage__accountName, " +
      "also work in a Function App)",
  );
}

function tableUrl(name: string, text: string): string {
  const problem = accountUrlProblem(text);
  if (problem)
    throw new Error(`${name} must be the registry account's Table endpoint URL: ${problem}`);
  return text.replace(/\/+$/, "");
}
