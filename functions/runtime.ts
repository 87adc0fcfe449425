/**
 * What both hosts (index.ts under Azure Functions, local.ts on Node) build
 * from their settings: the registry, the control plane the timers use, and
 * the HTTP app.
 */
import type { TokenCredential } from "@azure/identity";
import type { Hono } from "hono";
import { createApp } from "./app.ts";
import { type ControlPlane, type ControlPlaneOptions, controlPlane } from "./control-plane.ts";
import { matchesAdminKeySetting, verifyAdminKey } from "./registry/admin-keys.ts";
import { openRegistry } from "./registry/tables.ts";
import type { Settings } from "./settings.ts";
import { poolIdentity, usePoolIdentity } from "./storage/pool-identity.ts";

export interface Runtime {
  cp: ControlPlane;
  app: Hono;
  settings: Settings;
}

export interface RuntimeOptions extends Omit<ControlPlaneOptions, "registry"> {
  /**
   * The control plane's Entra ID identity: for the registry when settings
   * name its Table endpoint, and for managed-identity pools. Default:
   * `DefaultAzureCredential` (the Function App's managed identity in Azure).
   */
  credential?: TokenCredential;
}

/** Open the registry (creating missing tables) and build the app over it. */
export async function openRuntime(
  settings: Settings,
  options: RuntimeOptions = {},
): Promise<Runtime> {
  const { credential, ...cpOptions } = options;
  if (credential) usePoolIdentity(credential);
  const account =
    "tableUrl" in settings.registry
      ? { tableUrl: settings.registry.tableUrl, credential: poolIdentity().credential }
      : settings.registry.connectionString;
  const registry = await openRegistry(account, {
    prefix: settings.tablePrefix,
    ...(settings.livenessConnectionString === undefined
      ? {}
      : { liveness: settings.livenessConnectionString }),
  });
  const cp = controlPlane({
    registry,
    replicaSasLifetimeMs: settings.replicaSasLifetimeMs,
    detachDrainMs: settings.detachDrainMs,
    heartbeatIntervalMs: settings.sweep.heartbeatIntervalMs,
    eventRetentionDays: settings.eventRetentionDays,
    ...cpOptions,
  });
  const { adminKey } = settings;
  const app = createApp({
    ...cp,
    agentFiles: settings.agentFiles,
    orphanGraceMs: settings.orphanGraceMs,
    rateLimits: settings.rateLimits,
    verifyAdminKey: async (presented) =>
      (adminKey !== undefined && matchesAdminKeySetting(adminKey, presented)) ||
      verifyAdminKey(registry, presented),
  });
  return { cp, app, settings };
}
