/**
 * What both hosts (index.ts under Azure Functions, local.ts on Node) build
 * from their settings: the registry, the control plane the timers use, and
 * the HTTP app.
 */
import type { Hono } from "hono";
import { createApp } from "./app.ts";
import { type ControlPlane, type ControlPlaneOptions, controlPlane } from "./control-plane.ts";
import { matchesAdminKeySetting, verifyAdminKey } from "./registry/admin-keys.ts";
import { openRegistry } from "./registry/tables.ts";
import type { Settings } from "./settings.ts";

export interface Runtime {
  cp: ControlPlane;
  app: Hono;
  settings: Settings;
}

/** Open the registry (creating missing tables) and build the app over it. */
export async function openRuntime(
  settings: Settings,
  options: Omit<ControlPlaneOptions, "registry"> = {},
): Promise<Runtime> {
  const registry = await openRegistry(settings.registryConnectionString, {
    prefix: settings.tablePrefix,
  });
  const cp = controlPlane({ registry, ...options });
  const { adminKey } = settings;
  const app = createApp({
    ...cp,
    verifyAdminKey: async (presented) =>
      (adminKey !== undefined && matchesAdminKeySetting(adminKey, presented)) ||
      verifyAdminKey(registry, presented),
  });
  return { cp, app, settings };
}
