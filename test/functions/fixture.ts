/**
 * A control plane over a real Azurite (Table + Blob), driven in process
 * through `app.request`. Also the outside view of the storage account that
 * tests use to assert what did (or did not) change.
 */
import { TableClient, TableServiceClient } from "@azure/data-tables";
import { BlobServiceClient } from "@azure/storage-blob";
import type { Hono } from "hono";
import { createApp } from "../../functions/app.ts";
import { type ControlPlane, controlPlane } from "../../functions/control-plane.ts";
import { issueAdminKey } from "../../functions/registry/admin-keys.ts";
import {
  newSealingKeyText,
  sealingKeys,
  sealingKeysFrom,
  useSealingKeys,
} from "../../functions/registry/sealing-keys.ts";
import { openRegistry, type Registry } from "../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";

export interface ControlPlaneFixture {
  azurite: Azurite;
  registry: Registry;
  /** The control plane the app runs on: for workflows a test calls in process. */
  cp: ControlPlane;
  app: Hono;
  adminKey: string;
  /** Unexpected errors the app reported (each test may assert it stayed empty). */
  reported: unknown[];
  /** Request as an admin; `body` is JSON-encoded unless it is already a string. */
  call(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Response>;
  /** A pool connection string for this Azurite. */
  connectionString: string;
  /**
   * Register pool `name` over this Azurite (the API's default container
   * unless named), as an admin does; reached through `blobEndpoint` (a
   * fault proxy in front of Azurite's) when given.
   */
  addPool(name: string, container?: string, blobEndpoint?: string): Promise<void>;
  /** Everything in the account: every table's rows and every container's blobs, with ETags. */
  snapshot(): Promise<StorageSnapshot>;
  blobs: BlobServiceClient;
  dispose(): Promise<void>;
}

export interface StorageSnapshot {
  tables: Record<string, string[]>;
  containers: Record<string, string[]>;
}

/** 2025-01-01T00:00:00Z; the clock advances one second per reading, so events are strictly ordered. */
export const EPOCH_MS = Date.UTC(2025, 0, 1);

export interface FixtureOptions {
  /** The app's clock; by default one that starts at `EPOCH_MS` and advances a second per reading. */
  now?: () => Date;
  /** The longest a detach waits for the owner's drain (ControlPlane.detachDrainMs). */
  detachDrainMs?: number;
  /** How often agents are told to beat (ControlPlane.heartbeatIntervalMs). */
  heartbeatIntervalMs?: number;
}

export async function startControlPlane(
  options: FixtureOptions = {},
): Promise<ControlPlaneFixture> {
  const azurite = await startAzurite({ table: true, inMemory: true });
  // Pool connection strings are stored sealed (registry/pools.ts): the process holds a key, as a
  // host's does; one for the whole file, so that every fixture in it reads the others' rows.
  if (!sealingKeys()) useSealingKeys(sealingKeysFrom({ PAGEDISK_SECRETS_KEY: newSealingKeyText() }));
  const registry = await openRegistry(azurite.connectionString);
  let tick = 0;
  const reported: unknown[] = [];
  const cp = controlPlane({
    registry,
    now: options.now ?? (() => new Date(EPOCH_MS + 1000 * tick++)),
    report: (err) => reported.push(err),
    ...(options.detachDrainMs === undefined ? {} : { detachDrainMs: options.detachDrainMs }),
    ...(options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
  });
  const app = createApp(cp);
  const { key } = await issueAdminKey(registry, new Date(EPOCH_MS));
  const tables = TableServiceClient.fromConnectionString(azurite.connectionString, {
    allowInsecureConnection: true,
  });
  const blobs = BlobServiceClient.fromConnectionString(azurite.connectionString);
  const call = adminCalls(app, key);
  return {
    azurite,
    registry,
    cp,
    app,
    adminKey: key,
    reported,
    connectionString: azurite.connectionString,
    blobs,
    async addPool(name, container, blobEndpoint) {
      const connectionString = blobEndpoint
        ? azurite.connectionString.replace(/BlobEndpoint=[^;]+/, `BlobEndpoint=${blobEndpoint}`)
        : azurite.connectionString;
      const auth = { kind: "connectionString", connectionString };
      await jsonOf(await call("POST", "/api/v1/pools", { name, container, auth }), 201);
    },
    call,
    async snapshot() {
      const snap: StorageSnapshot = { tables: {}, containers: {} };
      for await (const t of tables.listTables()) {
        const rows: string[] = [];
        const client = TableClient.fromConnectionString(azurite.connectionString, t.name!, {
          allowInsecureConnection: true,
        });
        for await (const e of client.listEntities()) {
          // The sweeper records every pass (registry/sweeper-state.ts): that row is there, and changes.
          const sweeperState = t.name!.endsWith("control") && e.partitionKey === "sweeper";
          rows.push(`${e.partitionKey}/${e.rowKey}${sweeperState ? "" : ` ${e.etag}`}`);
        }
        snap.tables[t.name!] = rows;
      }
      for await (const c of blobs.listContainers()) {
        const list: string[] = [];
        const container = blobs.getContainerClient(c.name);
        for await (const b of container.listBlobsFlat()) {
          list.push(
            `${b.name} ${b.properties.etag} ${b.properties.contentLength} ${b.properties.leaseState}`,
          );
        }
        snap.containers[c.name] = list;
      }
      return snap;
    },
    dispose: () => azurite.dispose(),
  };
}

/** The error body of a response, after checking its status. */
export async function errorOf(
  res: Response,
  status: number,
): Promise<{ code: string; message: string; details?: unknown }> {
  const text = await res.text();
  if (res.status !== status) throw new Error(`expected ${status}, got ${res.status}: ${text}`);
  const body = JSON.parse(text) as { error: { code: string; message: string; details?: unknown } };
  if (typeof body.error?.code !== "string" || typeof body.error.message !== "string") {
    throw new Error(`not an error body: ${text}`);
  }
  return body.error;
}

/** The JSON body of a response, after checking its status. */
export async function jsonOf<T = Record<string, unknown>>(
  res: Response,
  status: number,
): Promise<T> {
  const text = await res.text();
  if (res.status !== status) throw new Error(`expected ${status}, got ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}

/** Admin requests to `app` with `key`; `body` is JSON-encoded unless it is already a string. */
function adminCalls(app: Hono, key: string): ControlPlaneFixture["call"] {
  return async (method, path, body, headers = {}) =>
    app.request(path, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
      ...(body === undefined
        ? {}
        : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
}

/**
 * The fixture's account, with the app under test over a registry whose
 * Table requests go through a fault proxy: a test can hold them there, or
 * take each one as a moment to look at what the control plane is doing.
 */
export async function startProxiedControlPlane(
  options: FixtureOptions,
): Promise<{ fx: ControlPlaneFixture; proxy: FaultProxy }> {
  const base = await startControlPlane(options);
  const proxy = await startFaultProxy(base.azurite.tableEndpoint!);
  const registry = await openRegistry(
    base.connectionString.replace(/TableEndpoint=[^;]+/, `TableEndpoint=${proxy.blobEndpoint}`),
  );
  const cp = controlPlane({ ...options, registry, report: (err) => base.reported.push(err) });
  const app = createApp(cp);
  const dispose = async () => {
    await proxy.close();
    await base.dispose();
  };
  return { fx: { ...base, registry, cp, app, call: adminCalls(app, base.adminKey), dispose }, proxy };
}
