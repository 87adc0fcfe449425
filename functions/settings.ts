/**
 * The control plane's configuration, read once from the environment (app
 * settings in Azure, the shell locally). Anything missing or malformed
 * fails at start, with the setting's name, rather than at first use.
 */
import { DEFAULT_SWEEP_POLICY, type SweepPolicy } from "./health/sweep.ts";

export interface Settings {
  /** Connection string of the registry's storage account (Table service). */
  registryConnectionString: string;
  /** Prefix of every registry table name. */
  tablePrefix: string;
  /** An admin key accepted besides those in the registry; unset locally. */
  adminKey: string | undefined;
  sweep: SweepPolicy;
}

/**
 * Settings from `env`:
 *
 * - `PAGEDISK_REGISTRY_CONNECTION_STRING`, else `AzureWebJobsStorage` (the Function App's own account)
 * - `PAGEDISK_TABLE_PREFIX` (default none)
 * - `PAGEDISK_ADMIN_KEY` (optional)
 * - `PAGEDISK_SUSPECT_AFTER_SECONDS`, `PAGEDISK_LOST_AFTER_SECONDS`
 */
export function settingsFrom(env: Record<string, string | undefined>): Settings {
  const registryConnectionString =
    env.PAGEDISK_REGISTRY_CONNECTION_STRING || env.AzureWebJobsStorage;
  if (!registryConnectionString) {
    throw new Error(
      "PAGEDISK_REGISTRY_CONNECTION_STRING (or AzureWebJobsStorage) must name the registry's storage account",
    );
  }
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
  return {
    registryConnectionString,
    tablePrefix: env.PAGEDISK_TABLE_PREFIX ?? "",
    adminKey: env.PAGEDISK_ADMIN_KEY || undefined,
    sweep: { suspectAfterMs, lostAfterMs },
  };
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
