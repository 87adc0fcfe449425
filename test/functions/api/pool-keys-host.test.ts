/**
 * Pool keys under the Azure Functions host (functions/index.ts, through
 * `@azure/functions` in test mode), with a sealing key set and
 * PAGEDISK_POOL_ACCOUNT_KEYS left unset: a pool row written before sealing
 * is sealed by the host's start, before the first request is answered, and
 * still shown masked; registering a pool with an account key is refused
 * (403, nothing changed), since the host's default is to refuse them.
 */
import { HttpRequest, type HttpResponseInit, InvocationContext } from "@azure/functions";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, expect, it } from "vitest";
import { issueAdminKey } from "../../../functions/registry/admin-keys.ts";
import { newSealingKeyText, sealingKeysFrom } from "../../../functions/registry/sealing-keys.ts";
import { openRegistry, type Registry } from "../../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";

type Entry = typeof import("../../../functions/index.ts");

const PREFIX = "keys";
const KEY = newSealingKeyText();
let azurite: Azurite;
let registry: Registry;
let entry: Entry;
let adminKey: string;

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  registry = await openRegistry(azurite.connectionString, { prefix: PREFIX });
  ({ key: adminKey } = await issueAdminKey(registry, new Date()));
  // A pool as the control plane wrote it before sealing: its connection string in the clear.
  await registry.pools.createEntity({
    partitionKey: "legacy",
    rowKey: "pool",
    account: azurite.accountName,
    blobEndpoint: azurite.blobEndpoint,
    container: "legacy-disks",
    health: "UNKNOWN",
    usage: "IN_USE",
    createdAt: "2025-01-01T00:00:00.000Z",
    updatedAt: "2025-01-01T00:00:00.000Z",
    authKind: "connectionString",
    connectionString: azurite.connectionString,
    annotations: "{}",
  });
  // index.ts reads its settings on first invocation; set them before it runs.
  process.env.PAGEDISK_REGISTRY_CONNECTION_STRING = azurite.connectionString;
  process.env.PAGEDISK_TABLE_PREFIX = PREFIX;
  process.env.PAGEDISK_SECRETS_KEY = KEY;
  delete process.env.PAGEDISK_POOL_ACCOUNT_KEYS;
  entry = await import("../../../functions/index.ts");
});
afterAll(() => azurite?.dispose());

async function invoke(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const request = new HttpRequest({
    method,
    url: `https://pagedisk-test.azurewebsites.net${path}`,
    headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: { string: JSON.stringify(body) } }),
  });
  const res: HttpResponseInit = await entry.httpTrigger(
    request,
    new InvocationContext({ invocationId: "test", functionName: "api" }),
  );
  const text = await new Response(res.body as ConstructorParameters<typeof Response>[0]).text();
  return { status: res.status ?? 200, text };
}

it("seals a row written before sealing at its start, and shows the pool masked as before", async () => {
  const shown = await invoke("GET", "/api/v1/pools/legacy");
  expect(shown.status, shown.text).toBe(200);
  expect(JSON.parse(shown.text).auth).toEqual({
    kind: "connectionString",
    connectionString: azurite.connectionString.replace(/AccountKey=[^;]+/, "AccountKey=***"),
  });
  const row = await registry.pools.getEntity<Record<string, unknown>>("legacy", "pool");
  expect(JSON.stringify(row)).not.toContain(azurite.accountKey);
  expect(row.connectionString).toBeUndefined();
  expect(String(row.sealedConnectionString)).toMatch(
    new RegExp(`^v1\\.${sealingKeysFrom({ PAGEDISK_SECRETS_KEY: KEY })!.current.id}\\.`),
  );
});

it("refuses to register a pool with an account key unless PAGEDISK_POOL_ACCOUNT_KEYS=allow, and changes nothing", async () => {
  const before = (await invoke("GET", "/api/v1/pools")).text;
  const res = await invoke("POST", "/api/v1/pools", {
    name: "keyed",
    container: "keyed-disks",
    auth: { kind: "connectionString", connectionString: azurite.connectionString },
  });
  expect(res.status, res.text).toBe(403);
  const { error } = JSON.parse(res.text) as { error: { code: string; message: string } };
  expect(error.code).toBe("Forbidden");
  expect(error.message).toContain("PAGEDISK_POOL_ACCOUNT_KEYS=allow");
  expect((await invoke("GET", "/api/v1/pools")).text).toBe(before);
  const blobs = BlobServiceClient.fromConnectionString(azurite.connectionString);
  expect(await blobs.getContainerClient("keyed-disks").exists()).toBe(false);
});
