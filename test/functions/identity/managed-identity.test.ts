/**
 * A control plane with no account key anywhere, over Azurite with HTTPS and
 * `--oauth basic`: the registry opened with a token credential
 * (PAGEDISK_REGISTRY_ACCOUNT_URL), a pool registered by account URL and
 * reached with the same credential, and agents handed user delegation SAS
 * URLs that allow exactly read and write of their one blob; a server-side
 * copy's source read through a user delegation SAS as long as the copy.
 */
import { randomBytes } from "node:crypto";
import { TableClient } from "@azure/data-tables";
import {
  AnonymousCredential,
  BlobServiceClient,
  type ContainerClient,
  PageBlobClient,
} from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DesiredState, JoinResponse } from "../../../contract/node.ts";
import type { Pool } from "../../../contract/pool.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Replica, Volume } from "../../../contract/volume.ts";
import { openPageBlob } from "../../../agent/pageblob/connect.ts";
import { isStorageError } from "../../../agent/pageblob/errors.ts";
import { pruneEvents } from "../../../functions/registry/event-retention.ts";
import { listEvents, recordEvent } from "../../../functions/registry/events.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { openRegistry } from "../../../functions/registry/tables.ts";
import { restCode, restStatus } from "../../../functions/rest-error.ts";
import { openRuntime, type Runtime } from "../../../functions/runtime.ts";
import { settingsFrom } from "../../../functions/settings.ts";
import { startReplicaCopy } from "../../../functions/storage/replica-copy.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";
import { errorOf, jsonOf } from "../fixture.ts";
import { makeTestCertificate, type TestCertificate, trustInThisProcess } from "./https.ts";
import { expiredIdentity, type TestIdentity, testIdentity } from "./token.ts";

const ADMIN_KEY = randomBytes(24).toString("base64url");

let cert: TestCertificate;
let azurite: Azurite;
let identity: TestIdentity;
let runtime: Runtime;
const reported: unknown[] = [];
/** The account as its owner sees it (shared key), to check what the control plane did. */
let owner: BlobServiceClient;
/** Pool mi's own container, as its owner sees it. */
let outside: ContainerClient;

/** A replica's container, as the account's owner sees it: pool `<name>`'s container is `<name>-disks`. */
function replicaContainerOf(r: Pick<Replica, "pool" | "id">): ContainerClient {
  return owner.getContainerClient(replicaContainerName(`${r.pool}-disks`, r.id));
}

beforeAll(async () => {
  cert = await makeTestCertificate();
  trustInThisProcess(cert.pem);
  azurite = await startAzurite({
    table: true,
    inMemory: true,
    tls: { cert: cert.cert, key: cert.key },
    oauth: "basic",
  });
  identity = testIdentity();
  const settings = settingsFrom({
    PAGEDISK_REGISTRY_ACCOUNT_URL: azurite.tableEndpoint,
    // The one account key of a deployment: the liveness table's (Table SAS need it).
    PAGEDISK_LIVENESS_CONNECTION_STRING: azurite.connectionString,
    PAGEDISK_ADMIN_KEY: ADMIN_KEY,
  });
  runtime = await openRuntime(settings, {
    credential: identity,
    report: (err) => reported.push(err),
  });
  owner = BlobServiceClient.fromConnectionString(azurite.connectionString);
  outside = owner.getContainerClient("mi-disks");
});
afterAll(async () => {
  await azurite?.dispose();
  await cert?.dispose();
});

function call(method: string, path: string, body?: unknown, bearer = ADMIN_KEY) {
  return runtime.app.request(path, {
    method,
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

const registerMi = (name: string, container: string, accountUrl: string) =>
  call("POST", "/api/v1/pools", { name, container, auth: { kind: "managedIdentity", accountUrl } });

describe("managed identity", () => {
  it("opens the registry with the token credential: tables made, rows written and read", async () => {
    expect(identity.requestedScopes.length).toBeGreaterThan(0);
    expect(identity.requestedScopes.flat()).toContain("https://storage.azure.com/.default");
    // An event of a day long past makes that day's table, is listed, and the table is pruned.
    const { registry } = runtime.cp;
    const at = new Date(Date.UTC(2020, 5, 1, 12));
    const probe = { type: "probe", message: "written under a token" };
    const event = await recordEvent(registry, at, probe);
    const horizon = { now: at, retentionDays: 1 };
    const page = await listEvents(registry, { type: "probe" }, { limit: 5 }, horizon);
    expect(page.items).toEqual([event]);
    const twoDaysLater = new Date(at.getTime() + 2 * 86_400_000);
    expect(await pruneEvents(registry, twoDaysLater, 1)).toEqual(["events20200601"]);
  });

  it("the registry's account refuses a token Azurite cannot accept", async () => {
    const err = await openRegistry(
      { tableUrl: azurite.tableEndpoint!, credential: expiredIdentity() },
      { prefix: "expired", liveness: azurite.connectionString },
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(restStatus(err)).toBe(403);
    // Nothing was made under the refused token.
    const tables = new TableClient(azurite.tableEndpoint!, "expiredpools", identity);
    const missing = await tables.listEntities().next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(restStatus(missing)).toBe(404);
  });

  it("registers a pool by account URL: container made with the token, view shows the URL", async () => {
    const res = await registerMi("mi", "mi-disks", `${azurite.blobEndpoint}/`);
    const pool = await jsonOf<Pool>(res, 201);
    expect(pool).toMatchObject({
      name: "mi",
      account: "devstoreaccount1",
      blobEndpoint: azurite.blobEndpoint,
      container: "mi-disks",
      auth: { kind: "managedIdentity", accountUrl: azurite.blobEndpoint },
    });
    expect(await outside.exists()).toBe(true);
    const shown = await jsonOf<Pool>(await call("GET", "/api/v1/pools/mi"), 200);
    expect(shown.auth).toEqual({ kind: "managedIdentity", accountUrl: azurite.blobEndpoint });
  });

  it("refuses account URLs that are not https or carry a query, and registers nothing", async () => {
    const before = await jsonOf<{ items: Pool[] }>(await call("GET", "/api/v1/pools"), 200);
    for (const accountUrl of [
      "http://example.com/devstoreaccount1",
      `${azurite.blobEndpoint}?sv=2025-01-05&sig=abc`,
      "https://user:pw@acct.blob.core.windows.net",
      "not a url",
    ]) {
      const err = await errorOf(await registerMi("bad", "bad-disks", accountUrl), 400);
      expect(err.code).toBe("InvalidRequest");
      expect(err.message).toMatch(/^body\.auth\.accountUrl: account URL /);
    }
    const twin = await errorOf(await registerMi("mi-twin", "mi-disks", azurite.blobEndpoint), 409);
    expect(twin.code).toBe("PoolExists");
    const after = await jsonOf<{ items: Pool[] }>(await call("GET", "/api/v1/pools"), 200);
    expect(after).toEqual(before);
  });

  let volume: Volume;
  let desired: DesiredState;
  let credential: string;

  it("creates a volume's blob with the token and hands its writer a user delegation SAS", async () => {
    volume = await jsonOf<Volume>(
      await call("POST", "/api/v1/volumes", { name: "data", sizeBytes: 1 << 20, pools: ["mi"] }),
      201,
    );
    const [replica] = volume.status.replicas;
    const blob = replicaContainerOf(replica!).getPageBlobClient(`data/${replica!.id}`);
    expect((await blob.getProperties()).contentLength).toBe(1 << 20);

    const token = await jsonOf<IssuedToken>(await call("POST", "/api/v1/tokens", {}), 201);
    const joined = await jsonOf<JoinResponse>(
      await call("POST", "/api/v1/nodes/join", { name: "vm-1" }, token.token),
      201,
    );
    credential = joined.credential;
    expect((await call("POST", "/api/v1/volumes/data/attach", { node: "vm-1" })).status).toBe(200);
    desired = await jsonOf<DesiredState>(
      await call("GET", "/api/v1/nodes/vm-1/desired", undefined, credential),
      200,
    );
    const url = new URL(desired.attachments[0]!.replicas[0]!.url!);
    expect(`${url.origin}${url.pathname}`).toBe(
      `${azurite.blobEndpoint}/${replicaContainerName("mi-disks", replica!.id)}/data/${replica!.id}`,
    );
    // A user delegation SAS: signed with a key given to this identity, not with an account key.
    // It cannot be bound to a stored access policy, so it carries its permissions itself.
    expect(url.searchParams.get("skoid")).toBe(identity.objectId);
    expect(url.searchParams.has("si")).toBe(false);
    expect(url.searchParams.get("sp")).toBe("rw");
    expect(url.searchParams.get("sr")).toBe("b");
    expect(url.searchParams.get("spr")).toBe("https");
    expect(Date.parse(url.searchParams.get("se")!)).toBe(
      Date.parse(desired.attachments[0]!.sasExpiresAt),
    );
    // Nothing revokes it: its lifetime is all that bounds a fenced holder's access.
    expect(Date.parse(url.searchParams.get("se")!) - Date.now()).toBeLessThanOrEqual(15 * 60_000);
    expect(reported).toEqual([]);
  });

  it("reuses the delegation key: the next desired state is signed with the same key", async () => {
    const again = await jsonOf<DesiredState>(
      await call("GET", "/api/v1/nodes/vm-1/desired", undefined, credential),
      200,
    );
    const first = new URL(desired.attachments[0]!.replicas[0]!.url!).searchParams;
    const second = new URL(again.attachments[0]!.replicas[0]!.url!).searchParams;
    for (const field of ["skoid", "sktid", "skt", "ske"]) expect(second.get(field)).toBe(first.get(field));
  });

  it("the SAS writes and reads its blob (our undici client), and can neither delete it nor touch another", async () => {
    const attachment = desired.attachments[0]!;
    const sasUrl = attachment.replicas[0]!.url!;
    const blob = openPageBlob(sasUrl);
    try {
      const data = randomBytes(4096);
      await blob.putPages(8192, data, { leaseId: attachment.leaseId });
      expect(Buffer.from(await blob.read(8192, 4096))).toEqual(data);
    } finally {
      await blob.close();
    }

    const sdk = new PageBlobClient(sasUrl, new AnonymousCredential());
    const refused = await sdk.delete({ conditions: { leaseId: attachment.leaseId } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(restStatus(refused)).toBe(403);
    expect(restCode(refused)).toBe("AuthorizationPermissionMismatch");
    const replica = volume.status.replicas[0]!;
    const container = replicaContainerOf(replica);
    expect(await container.getPageBlobClient(`data/${replica.id}`).exists()).toBe(true);

    // Another blob in the same container, with this SAS on its URL.
    await container.getPageBlobClient("other/blob").create(4096);
    const other = new URL(sasUrl);
    other.pathname = other.pathname.replace(`/data/${replica.id}`, "/other/blob");
    expect(other.pathname).toBe(`/${azurite.accountName}/${container.containerName}/other/blob`);
    const foreign = openPageBlob(other.toString());
    try {
      const write = await foreign.putPages(0, randomBytes(512)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isStorageError(write) && write.status).toBe(403);
      const read = await foreign.read(0, 512).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isStorageError(read) && read.status).toBe(403);
    } finally {
      await foreign.close();
    }
    expect(reported).toEqual([]);
  });

  it("signs a long copy's source SAS with a key of its own that outlives it, and the copy reads through it", async () => {
    await jsonOf<Pool>(await registerMi("mi2", "mi2-disks", `${azurite.blobEndpoint}/`), 201);
    const v = await jsonOf<Volume>(
      await call("POST", "/api/v1/volumes", { name: "copied", sizeBytes: 1 << 20, replicas: 2, pools: ["mi", "mi2"] }),
      201,
    );
    const [source, target] = v.status.replicas as [Replica, Replica];
    const blobOf = (r: Replica) => replicaContainerOf(r).getPageBlobClient(`copied/${r.id}`);
    const data = randomBytes(8192);
    await blobOf(source).uploadPages(data, 0, data.length);
    const leaseId = "00000000-0000-4000-8000-0000000c0de1";
    await blobOf(target).getBlobLeaseClient(leaseId).acquireLease(-1);
    const table = pools(runtime.cp.registry);
    const from = Date.now();
    const started = await startReplicaCopy(
      "copied",
      { pool: (await table.get(source.pool))!.value, id: source.id },
      { pool: (await table.get(target.pool))!.value, id: target.id },
      leaseId,
      1024 ** 4,
    );
    expect(started.status).toBe("success");
    expect((await blobOf(target).downloadToBuffer(0, data.length)).equals(data)).toBe(true);

    const sas = new URL((await blobOf(target).getProperties()).copySource!).searchParams;
    expect(sas.get("skoid")).toBe(identity.objectId);
    expect(sas.get("sp")).toBe("r");
    // 1 TiB at the 16 MiB/s floor, plus an hour: past the cached key's hours, so a key of its own.
    const hours = (Date.parse(sas.get("se")!) - from) / 3_600_000;
    expect(hours).toBeGreaterThan(1 + 65_536 / 3600 - 0.02);
    expect(Date.parse(sas.get("ske")!)).toBeGreaterThanOrEqual(Date.parse(sas.get("se")!));
    // The agents' key is still the cached one, which the long one did not replace.
    const again = await jsonOf<DesiredState>(
      await call("GET", "/api/v1/nodes/vm-1/desired", undefined, credential),
      200,
    );
    const agentKey = new URL(again.attachments[0]!.replicas[0]!.url!).searchParams;
    expect(agentKey.get("ske")).toBe(new URL(desired.attachments[0]!.replicas[0]!.url!).searchParams.get("ske"));
    expect(reported).toEqual([]);
  });
});
