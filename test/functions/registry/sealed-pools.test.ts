/**
 * Pool secrets at rest, over Azurite: a pool registered with its account key
 * is stored sealed (its raw row holds neither the key nor the connection
 * string) and still serves a volume; the API shows it masked as before; a
 * control plane that refuses account keys answers 403 and changes nothing;
 * a row sealed with a key the control plane does not hold fails with an
 * error naming the pool and the key, and opens again once that key is given
 * as a previous one, the start pass re-sealing it under the current key; a
 * row written before sealing is read as it is and sealed by its next write
 * or by the start pass.
 */
import type { TableEntityResult } from "@azure/data-tables";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { Pool } from "../../../contract/pool.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { createApp } from "../../../functions/app.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { pools, sealPoolRows } from "../../../functions/registry/pools.ts";
import { SealedSecretError } from "../../../functions/registry/sealed.ts";
import {
  newSealingKeyText,
  type SealingKeys,
  sealingKeys,
  sealingKeysFrom,
  useSealingKeys,
} from "../../../functions/registry/sealing-keys.ts";
import { settingsFrom } from "../../../functions/settings.ts";
import { sweep } from "../../../functions/health/sweep.ts";
import { agentNodes, NO_SECOND_LOOK, STEPPED_POLICY } from "../agents.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";
import { POLICY_PROPAGATION_MS } from "../../../functions/arbiter/desired-state.ts";
import { aheadOfRealTime } from "../agents.ts";

/** The app's clock: near the real time (the storage service checks what it signs), moved by tests. */
let nowMs = aheadOfRealTime();

const SIZE = 64 * 1024;
let fx: ControlPlaneFixture;
let token: IssuedToken;
/** The fixture's keys, put back after each test that swaps them. */
let fixtureKeys: SealingKeys;
const { join, desired } = agentNodes(
  () => fx,
  () => token.token,
);

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs) });
  fixtureKeys = sealingKeys()!;
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  await join("vm-1");
});
afterAll(() => fx?.dispose());
afterEach(() => useSealingKeys(fixtureKeys));

function keysOf(current: string, ...previous: string[]): SealingKeys {
  return sealingKeysFrom({
    PAGEDISK_SECRETS_KEY: current,
    PAGEDISK_SECRETS_KEY_PREVIOUS: previous.join(","),
  })!;
}

/** The pool's row exactly as Table Storage holds it. */
async function rawRow(pool: string): Promise<TableEntityResult<Record<string, unknown>>> {
  return fx.registry.pools.getEntity<Record<string, unknown>>(pool, "pool");
}

/** What the key leaves in a row's text: the key itself, or any 16 characters of it. */
function expectNoSecretIn(text: string): void {
  expect(text).not.toContain(fx.azurite.accountKey);
  expect(text).not.toContain(fx.azurite.accountKey.slice(20, 36));
  expect(text).not.toContain(fx.connectionString);
  expect(text).not.toContain("AccountKey");
}

/** The connection string as the API showed it before sealing existed. */
const masked = () => fx.connectionString.replace(/AccountKey=[^;]+/, "AccountKey=***");

/** A row as the control plane wrote it before sealing: the connection string in the clear. */
async function writeLegacyRow(pool: string, container: string): Promise<void> {
  await fx.blobs.getContainerClient(container).createIfNotExists();
  await fx.registry.pools.createEntity({
    partitionKey: pool,
    rowKey: "pool",
    account: fx.azurite.accountName,
    blobEndpoint: fx.azurite.blobEndpoint,
    container,
    health: "UNKNOWN",
    usage: "IN_USE",
    createdAt: "2025-01-01T00:00:00.000Z",
    updatedAt: "2025-01-01T00:00:00.000Z",
    authKind: "connectionString",
    connectionString: fx.connectionString,
    annotations: "{}",
  });
}

/**
 * Create a one-replica volume on `pool`, attach it to vm-1, and write a page
 * through the SAS URL vm-1's desired state hands out: the control plane
 * opened the pool's connection string to take the lease and sign that URL.
 */
async function servesAVolume(pool: string, volume: string): Promise<void> {
  const created = await fx.call("POST", "/api/v1/volumes", {
    name: volume,
    sizeBytes: SIZE,
    replicas: 1,
    pools: [pool],
  });
  expect(created.status, await created.clone().text()).toBe(201);
  const attached = await jsonOf<Attachment>(
    await fx.call("POST", `/api/v1/volumes/${volume}/attach`, { node: "vm-1" }),
    200,
  );
  // Past the time Azure may take to apply the lease's policy: the SAS is bound to it, and Azurite
  // takes a bound SAS's times from the policy (it would refuse an unbound one at a clock far from
  // its own).
  nowMs += POLICY_PROPAGATION_MS;
  const a = (await desired("vm-1")).attachments.find((x) => x.volume === volume)!;
  const url = a.replicas[0]!.url!;
  expect(url).toEqual(expect.any(String));
  const put = await fetch(`${url}&comp=page`, {
    method: "PUT",
    headers: {
      "x-ms-version": "2021-08-06",
      "x-ms-page-write": "update",
      "x-ms-range": "bytes=0-511",
      "x-ms-lease-id": attached.leaseId,
    },
    body: new Uint8Array(512).fill(0x5a),
  });
  expect(put.status).toBe(201);
}

describe("a pool registered with its account key", () => {
  it("is stored sealed: its raw row holds neither the key nor the connection string, and the API shows it masked as before", async () => {
    const shown = await jsonOf<Pool>(
      await fx.call("POST", "/api/v1/pools", {
        name: "keyed",
        container: "keyed-disks",
        auth: { kind: "connectionString", connectionString: fx.connectionString },
      }),
      201,
    );
    expect(shown.auth).toEqual({ kind: "connectionString", connectionString: masked() });

    const row = await rawRow("keyed");
    expectNoSecretIn(JSON.stringify(row));
    expect(row.connectionString).toBeUndefined();
    expect(row.sealedConnectionString).toMatch(
      new RegExp(`^v1\\.${fixtureKeys.current.id}\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$`),
    );
    // The whole account as a reader of it sees it: no table holds the key.
    const snapshot = JSON.stringify(await fx.snapshot());
    expect(snapshot).not.toContain(fx.azurite.accountKey);

    const again = await jsonOf<Pool>(await fx.call("GET", "/api/v1/pools/keyed"), 200);
    expect(again.auth).toEqual({ kind: "connectionString", connectionString: masked() });
    expect((await pools(fx.registry).get("keyed"))!.value).toMatchObject({
      authKind: "connectionString",
      connectionString: fx.connectionString,
    });
  });

  it("still serves: a volume is created on it, attached, and written through its writer's SAS", async () => {
    await servesAVolume("keyed", "on-keyed");
    expect(fx.reported).toEqual([]);
  });
});

describe("a control plane that refuses account keys", () => {
  const refusing = () =>
    createApp(controlPlane({ registry: fx.registry, poolAccountKeys: "refuse", report: (e) => fx.reported.push(e) }));
  const register = (connectionString: string, name = "refused") =>
    refusing().request("/api/v1/pools", {
      method: "POST",
      headers: { authorization: `Bearer ${fx.adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ name, container: "refused-disks", auth: { kind: "connectionString", connectionString } }),
    });

  it("answers 403 to a connection string with an account key, a SAS, or Azurite's key, and changes nothing", async () => {
    const before = await fx.snapshot();
    const sas = `BlobEndpoint=${fx.azurite.blobEndpoint};SharedAccessSignature=sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2099-01-01&sig=abc`;
    for (const connectionString of [fx.connectionString, sas, "UseDevelopmentStorage=true"]) {
      const err = await errorOf(await register(connectionString), 403);
      expect(err.code).toBe("Forbidden");
      expect(err.message).toContain("PAGEDISK_POOL_ACCOUNT_KEYS");
      expect(err.message).toContain("managed identity");
      expect(err.message).not.toContain(fx.azurite.accountKey);
    }
    expect(await fx.snapshot()).toEqual(before);
    expect(await fx.blobs.getContainerClient("refused-disks").exists()).toBe(false);
    expect(fx.reported).toEqual([]);
  });

  it("is what settings give unless PAGEDISK_POOL_ACCOUNT_KEYS=allow, and allow needs a sealing key", () => {
    const base = { PAGEDISK_REGISTRY_CONNECTION_STRING: fx.connectionString };
    expect(settingsFrom(base).poolAccountKeys).toBe("refuse");
    expect(() => settingsFrom({ ...base, PAGEDISK_POOL_ACCOUNT_KEYS: "allow" })).toThrow(
      /PAGEDISK_POOL_ACCOUNT_KEYS=allow needs PAGEDISK_SECRETS_KEY/,
    );
    const key = newSealingKeyText();
    const allowed = settingsFrom({ ...base, PAGEDISK_POOL_ACCOUNT_KEYS: "allow", PAGEDISK_SECRETS_KEY: key });
    expect(allowed.poolAccountKeys).toBe("allow");
    expect(allowed.sealingKeys?.current.key).toEqual(Buffer.from(key, "base64"));
    expect(() => settingsFrom({ ...base, PAGEDISK_POOL_ACCOUNT_KEYS: "yes" })).toThrow(/refuse or allow/);
    expect(() => settingsFrom({ ...base, PAGEDISK_SECRETS_KEY: "c2hvcnQ=" })).toThrow(/32 random bytes/);
    expect(() =>
      settingsFrom({ ...base, PAGEDISK_SECRETS_KEY: "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/k)" }),
    ).toThrow(/Key Vault reference that App Service did not resolve/);
    expect(() => settingsFrom({ ...base, PAGEDISK_SECRETS_KEY_PREVIOUS: key })).toThrow(
      /PAGEDISK_SECRETS_KEY_PREVIOUS is set but PAGEDISK_SECRETS_KEY is not/,
    );
  });
});

describe("a row sealed with a key the control plane does not hold", () => {
  it("fails with an error naming the pool and the key it needs; the API answers 500, reports it, and changes nothing", async () => {
    await fx.addPool("other-key", "other-key-disks");
    const sealedWith = fixtureKeys.current.id;
    const stranger = keysOf(newSealingKeyText());
    useSealingKeys(stranger);
    const before = await fx.snapshot();

    const err = await pools(fx.registry)
      .get("other-key")
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(SealedSecretError);
    expect((err as SealedSecretError).problem).toBe("KeyMissing");
    expect((err as SealedSecretError).message).toBe(
      `pool other-key's connection string is sealed with key ${sealedWith}, which this control plane does not have (it holds key ${stranger.current.id}): set PAGEDISK_SECRETS_KEY, or PAGEDISK_SECRETS_KEY_PREVIOUS while it is re-sealed, to the key it was sealed with`,
    );

    fx.reported.length = 0;
    const res = await fx.call("GET", "/api/v1/pools/other-key");
    expect((await errorOf(res, 500)).code).toBe("Internal");
    expect(fx.reported).toHaveLength(1);
    expect(String(fx.reported[0])).toContain(`pool other-key's connection string is sealed with key ${sealedWith}`);

    // The start pass cannot seal it either: it says so, and leaves the row as it was.
    const pass = await sealPoolRows(fx.registry);
    expect(pass.failed.map((f) => f.pool)).toContain("other-key");
    expect(pass.failed.find((f) => f.pool === "other-key")!.error.message).toContain(sealedWith);
    expect(await fx.snapshot()).toEqual(before);

    // A sweep pass goes on past it, and says why it could not judge the pools (the first
    // unreadable row a listing meets).
    fx.reported.length = 0;
    await sweep(fx.cp, STEPPED_POLICY, NO_SECOND_LOOK);
    expect(fx.reported.length).toBeGreaterThan(0);
    for (const e of fx.reported) {
      expect(e).toBeInstanceOf(SealedSecretError);
      expect((e as Error).message).toMatch(/^pool [a-z-]+'s connection string is sealed with key /);
    }

    // With no key at all, the same.
    useSealingKeys(undefined);
    await expect(pools(fx.registry).get("other-key")).rejects.toThrow(
      /sealed with key [0-9a-f]{16}, which this control plane does not have \(it holds no sealing key\)/,
    );
    fx.reported.length = 0;
  });

  it("opens with that key given as previous, and the start pass re-seals it under the current key", async () => {
    // The other pools stay sealed with the fixture's key throughout: it is a previous key here too.
    const old = { current: keysOf(newSealingKeyText()).current, previous: [fixtureKeys.current] };
    useSealingKeys(old);
    await fx.addPool("rotated", "rotated-disks");
    expect(String((await rawRow("rotated")).sealedConnectionString)).toMatch(
      new RegExp(`^v1\\.${old.current.id}\\.`),
    );

    const next = keysOf(newSealingKeyText()).current;
    useSealingKeys({ current: next, previous: [fixtureKeys.current] });
    await expect(pools(fx.registry).get("rotated")).rejects.toThrow(`sealed with key ${old.current.id}`);

    useSealingKeys({ current: next, previous: [old.current, fixtureKeys.current] });
    expect((await pools(fx.registry).get("rotated"))!.value).toMatchObject({ connectionString: fx.connectionString });
    const pass = await sealPoolRows(fx.registry);
    // Every row not under the current key: the fixture's too.
    expect(pass.sealed).toContain("rotated");
    expect(pass.failed).toEqual([]);
    const row = await rawRow("rotated");
    expect(String(row.sealedConnectionString)).toMatch(new RegExp(`^v1\\.${next.id}\\.`));
    expectNoSecretIn(JSON.stringify(row));

    // The old keys are no longer needed: the new one alone opens every row, and the pool serves.
    useSealingKeys({ current: next, previous: [] });
    await servesAVolume("rotated", "on-rotated");
    // A second pass has nothing left to do.
    expect(await sealPoolRows(fx.registry)).toEqual({ sealed: [], failed: [] });

    // Back under the fixture's key, rotated the same way, for the tests that follow.
    useSealingKeys({ current: fixtureKeys.current, previous: [next] });
    expect((await sealPoolRows(fx.registry)).failed).toEqual([]);
    expect(fx.reported).toEqual([]);
  });

  it("refuses a sealed value copied from another pool's row: it does not open there", async () => {
    await fx.addPool("victim", "victim-disks");
    await fx.addPool("thief", "thief-disks");
    const victim = await rawRow("victim");
    const thief = await rawRow("thief");
    await fx.registry.pools.updateEntity(
      { partitionKey: "thief", rowKey: "pool", sealedConnectionString: victim.sealedConnectionString },
      "Merge",
      { etag: thief.etag },
    );
    await expect(pools(fx.registry).get("thief")).rejects.toThrow(
      `pool thief's connection string does not open with key ${fixtureKeys.current.id}: the stored value was altered, or copied from another record`,
    );
    await fx.registry.pools.deleteEntity("thief", "pool");
  });
});

describe("a row written before sealing", () => {
  it("is read as it is, shown masked, and sealed by its next write", async () => {
    await writeLegacyRow("legacy", "legacy-disks");
    expect((await pools(fx.registry).get("legacy"))!.value).toMatchObject({
      authKind: "connectionString",
      connectionString: fx.connectionString,
    });
    const shown = await jsonOf<Pool>(await fx.call("GET", "/api/v1/pools/legacy"), 200);
    expect(shown.auth).toEqual({ kind: "connectionString", connectionString: masked() });

    // Any write of the record: here an annotation.
    await jsonOf(await fx.call("PATCH", "/api/v1/pools/legacy/annotations", { "health": "suspect" }), 200);
    const row = await rawRow("legacy");
    expectNoSecretIn(JSON.stringify(row));
    expect(row.connectionString).toBeUndefined();
    expect(String(row.sealedConnectionString)).toMatch(new RegExp(`^v1\\.${fixtureKeys.current.id}\\.`));
    await jsonOf(await fx.call("PATCH", "/api/v1/pools/legacy/annotations", { "health": null }), 200);
    expect((await pools(fx.registry).get("legacy"))!.value.annotations).toEqual({});
  });

  it("is sealed by the start pass, and the pool still serves a volume", async () => {
    await writeLegacyRow("legacy-start", "legacy-start-disks");
    const pass = await sealPoolRows(fx.registry);
    expect(pass.sealed).toEqual(["legacy-start"]);
    const row = await rawRow("legacy-start");
    expectNoSecretIn(JSON.stringify(row));
    expect(row.connectionString).toBeUndefined();
    await servesAVolume("legacy-start", "on-legacy");
    expect(fx.reported).toEqual([]);
  });

  it("is left as it is, and reported, by a start pass that has no key to seal it with", async () => {
    await writeLegacyRow("legacy-nokey", "legacy-nokey-disks");
    useSealingKeys(undefined);
    const pass = await sealPoolRows(fx.registry);
    const failed = pass.failed.find((f) => f.pool === "legacy-nokey");
    expect(failed?.error.message).toBe(
      "pool legacy-nokey's connection string cannot be stored: this control plane has no sealing key, and secrets are never stored in the clear (set PAGEDISK_SECRETS_KEY to 32 random bytes in base64)",
    );
    // Still readable, and still in the clear: nothing was written.
    expect((await pools(fx.registry).get("legacy-nokey"))!.value).toMatchObject({ connectionString: fx.connectionString });
    expect((await rawRow("legacy-nokey")).connectionString).toBe(fx.connectionString);
    await fx.registry.pools.deleteEntity("legacy-nokey", "pool");
  });
});
