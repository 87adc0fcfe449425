/**
 * The control plane on plain Node, for `npm start` and tests: the same Hono
 * app on @hono/node-server, the sweeper on an interval instead of a timer
 * trigger. On first start it issues an admin key, prints it and saves
 * `{ apiUrl, adminKey }` to `<stateDir>/local.json` (mode 0600), where the
 * CLI finds it; later starts reuse the saved key while it still verifies.
 *
 *   const cp = await startLocalControlPlane({ connectionString });
 *   // ... cp.apiUrl, cp.adminKey
 *   await cp.close();
 *
 * Run directly (`node functions/local.ts`) it takes its settings from the
 * environment, as in Azure (see settings.ts), with two local defaults:
 * pools with account keys are allowed (Azurite knows no managed identity),
 * and their connection strings are sealed with a key of its own, made on
 * first start in `<stateDir>/secrets.key` (0600), unless
 * PAGEDISK_POOL_ACCOUNT_KEYS or PAGEDISK_SECRETS_KEY say otherwise.
 */
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "@hono/node-server";
import { API_PREFIX } from "./app.ts";
import { DEFAULT_SWEEP_POLICY, sweep } from "./health/sweep.ts";
import { answerClientErrors, closeOnUnreadBody } from "./http/node-edge.ts";
import { issueAdminKey, verifyAdminKey } from "./registry/admin-keys.ts";
import { sealPoolRows } from "./registry/pools.ts";
import { localSealingSettings, useSealingKeys } from "./registry/sealing-keys.ts";
import { openRuntime, type Runtime } from "./runtime.ts";
import { type Settings, settingsFrom } from "./settings.ts";

/** Where the Functions host listens locally too, so URLs look the same. */
export const LOCAL_PORT = 7071;
const LOCAL_HOST = "127.0.0.1";
/** Sweep this often locally, as the timer trigger's schedule does in Azure (index.ts). */
export const LOCAL_SWEEP_INTERVAL_MS = DEFAULT_SWEEP_POLICY.sweepIntervalMs;
const DEFAULT_STATE_DIR = resolve(import.meta.dirname, "..", ".pagedisk");

export interface LocalOptions {
  /** Registry connection string; else `PAGEDISK_REGISTRY_CONNECTION_STRING` from `env`. */
  connectionString?: string;
  /** Where the rest of the settings come from; defaults to `process.env`. */
  env?: Record<string, string | undefined>;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Directory of `local.json`; defaults to `.pagedisk/` at the repository root. */
  stateDir?: string;
  sweepIntervalMs?: number;
  /** Clock of the app and the sweeper. */
  now?: () => Date;
  /** Where the new admin key and unexpected errors are told; defaults to the console. */
  log?: (line: string) => void;
}

export interface LocalControlPlane {
  /** e.g. `http://127.0.0.1:7071/api/v1` */
  readonly apiUrl: string;
  readonly adminKey: string;
  readonly runtime: Runtime;
  /** Resolves when the next sweep pass to start has ended. */
  nextPass(): Promise<void>;
  /** Stop the sweeper, then the server (waiting for requests in flight). */
  close(): Promise<void>;
}

/** What `local.json` holds. */
export interface LocalState {
  apiUrl: string;
  adminKey: string;
}

export async function startLocalControlPlane(opts: LocalOptions = {}): Promise<LocalControlPlane> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((line) => console.log(line));
  const settings: Settings = settingsFrom({
    ...env,
    ...(opts.connectionString
      ? { PAGEDISK_REGISTRY_CONNECTION_STRING: opts.connectionString }
      : {}),
    ...(await localSealingSettings(env, opts.stateDir ?? DEFAULT_STATE_DIR)),
  });
  // Installed before the registry is read; rows not yet sealed under the key are sealed at once.
  useSealingKeys(settings.sealingKeys);
  const runtime = await openRuntime(settings, {
    ...(opts.now ? { now: opts.now } : {}),
    report: (err) =>
      log(`pagedisk control plane: ${err instanceof Error ? err.stack : String(err)}`),
    poolAccountKeys: settings.poolAccountKeys,
  });
  for (const { error } of (await sealPoolRows(runtime.cp.registry)).failed) runtime.cp.report(error);

  // Connections and refusals as the API promises them (http/node-edge.ts).
  const server = serve({
    fetch: closeOnUnreadBody(runtime.app.fetch),
    hostname: opts.host ?? LOCAL_HOST,
    port: opts.port ?? LOCAL_PORT,
  }) as Server;
  answerClientErrors(server);
  await new Promise<void>((ready, fail) => {
    server.once("listening", ready);
    server.once("error", fail);
  });
  const { port } = server.address() as AddressInfo;
  const apiUrl = `http://${opts.host ?? LOCAL_HOST}:${port}${API_PREFIX}`;

  const stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
  const adminKey = await localAdminKey(runtime, stateDir, apiUrl, log);

  // One sweep at a time: a slow one is not overtaken by the next tick.
  let sweeping: Promise<unknown> | undefined;
  // Settled when the next pass to start has ended.
  let endNext = () => {};
  let next = new Promise<void>((resolve) => (endNext = resolve));
  const interval = opts.sweepIntervalMs ?? LOCAL_SWEEP_INTERVAL_MS;
  const timer = setInterval(() => {
    if (sweeping) return;
    const ended = endNext;
    next = new Promise<void>((resolve) => (endNext = resolve));
    sweeping = sweep(runtime.cp, { ...settings.sweep, sweepIntervalMs: interval })
      .catch(runtime.cp.report)
      .finally(() => {
        sweeping = undefined;
        ended();
      });
  }, interval);

  return {
    apiUrl,
    adminKey,
    runtime,
    nextPass: () => next,
    async close() {
      clearInterval(timer);
      await sweeping;
      await new Promise<void>((done, fail) => server.close((err) => (err ? fail(err) : done())));
    },
  };
}

/** The saved key if the registry still knows it, else a new one, saved. */
async function localAdminKey(
  runtime: Runtime,
  stateDir: string,
  apiUrl: string,
  log: (line: string) => void,
): Promise<string> {
  const file = join(stateDir, "local.json");
  const saved = await readState(file);
  let adminKey = saved?.adminKey;
  if (adminKey === undefined || !(await verifyAdminKey(runtime.cp.registry, adminKey))) {
    adminKey = (await issueAdminKey(runtime.cp.registry, runtime.cp.now())).key;
    log(`pagedisk: new admin key (saved in ${file}):\n  ${adminKey}`);
  }
  if (saved?.adminKey !== adminKey || saved.apiUrl !== apiUrl) {
    await mkdir(stateDir, { recursive: true });
    const state: LocalState = { apiUrl, adminKey };
    await writeFile(file, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    // `mode` applies only when the file is created; an older file may be laxer.
    await chmod(file, 0o600);
  }
  return adminKey;
}

async function readState(file: string): Promise<Partial<LocalState> | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const parsed = JSON.parse(text) as Partial<LocalState>;
  return typeof parsed === "object" && parsed !== null ? parsed : undefined;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const local = await startLocalControlPlane();
  console.log(`pagedisk control plane on ${local.apiUrl}`);
  const stop = () => void local.close().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
