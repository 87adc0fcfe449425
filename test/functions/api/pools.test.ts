/**
 * Pools through the API over Azurite: register, list, show, remove, and the
 * refusals that must leave tables and blobs exactly as they were.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Pool, PoolList } from "../../../contract/pool.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { freePort } from "../../harness/azurite.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

let cp: ControlPlaneFixture;
beforeAll(async () => {
  cp = await startControlPlane();
});
afterAll(() => cp?.dispose());

const register = (name: string, container: string, connectionString = cp.connectionString) =>
  cp.call("POST", "/api/v1/pools", {
    name,
    container,
    auth: { kind: "connectionString", connectionString },
  });

describe("pools", () => {
  it("registers a pool: creates its container and never shows the account key", async () => {
    const res = await register("east", "east-disks");
    const text = await res.clone().text();
    const pool = await jsonOf<Pool>(res, 201);
    expect(pool).toMatchObject({
      name: "east",
      account: "devstoreaccount1",
      blobEndpoint: cp.azurite.blobEndpoint,
      container: "east-disks",
      health: "UNKNOWN",
      usage: "IN_USE",
    });
    expect(pool.auth.kind).toBe("connectionString");
    expect(pool.auth.kind === "connectionString" && pool.auth.connectionString).toContain(
      "AccountKey=***",
    );
    expect(text).not.toContain(cp.azurite.accountKey);
    expect(await cp.blobs.getContainerClient("east-disks").exists()).toBe(true);
  });

  it("lists and shows pools, masked", async () => {
    await jsonOf(await register("west", "west-disks"), 201);
    const list = await jsonOf<PoolList>(await cp.call("GET", "/api/v1/pools"), 200);
    expect(list.items.map((p) => p.name)).toEqual(["east", "west"]);
    const shown = await cp.call("GET", "/api/v1/pools/west");
    const text = await shown.clone().text();
    expect((await jsonOf<Pool>(shown, 200)).container).toBe("west-disks");
    expect(text).not.toContain(cp.azurite.accountKey);
  });

  it("refuses a taken name, and a container already registered under another name", async () => {
    const before = await cp.snapshot();
    expect((await errorOf(await register("east", "other-disks"), 409)).code).toBe("PoolExists");
    const twin = await errorOf(await register("east-again", "east-disks"), 409);
    expect(twin.code).toBe("PoolExists");
    expect(twin.details).toEqual({ pool: "east" });
    expect(await cp.snapshot()).toEqual(before);
  });

  it("refuses a connection string that names no account, without echoing it", async () => {
    const before = await cp.snapshot();
    const err = await errorOf(
      await register("bad", "bad-disks", "AccountKey=c2VjcmV0;nonsense"),
      400,
    );
    expect(err.code).toBe("InvalidRequest");
    expect(err.message).toMatch(/^body\.auth\.connectionString: /);
    expect(JSON.stringify(err)).not.toContain("c2VjcmV0");
    expect(await cp.snapshot()).toEqual(before);
  });

  it("answers 422 for a pool that does not answer or refuses the key, and registers nothing", async () => {
    const before = await cp.snapshot();
    const closed = `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${cp.azurite.accountKey};BlobEndpoint=http://127.0.0.1:${await freePort()}/devstoreaccount1`;
    const unreachable = await errorOf(await register("closed", "closed-disks", closed), 422);
    expect(unreachable.code).toBe("PoolUnreachable");
    const wrongKey = cp.connectionString.replace(
      cp.azurite.accountKey,
      randomBytes(64).toString("base64"),
    );
    const refused = await errorOf(await register("wrong-key", "wrong-key-disks", wrongKey), 422);
    expect(refused.code).toBe("PoolUnreachable");
    expect(refused.details).toMatchObject({ status: 403 });
    expect(await cp.snapshot()).toEqual(before);
  });

  it("shows 404 for an unknown pool and 400 for a name that cannot be one", async () => {
    expect((await errorOf(await cp.call("GET", "/api/v1/pools/nope"), 404)).code).toBe(
      "PoolNotFound",
    );
    expect((await errorOf(await cp.call("DELETE", "/api/v1/pools/nope"), 404)).code).toBe(
      "PoolNotFound",
    );
    const bad = await errorOf(await cp.call("GET", "/api/v1/pools/Not_A_Name"), 400);
    expect(bad.code).toBe("InvalidRequest");
    expect(bad.message).toMatch(/^path\.name: /);
  });

  it("refuses to remove a pool that holds replicas, changing nothing", async () => {
    await jsonOf(
      await cp.call("POST", "/api/v1/volumes", {
        name: "pinned",
        sizeBytes: 4096,
        pools: ["west"],
      }),
      201,
    );
    const before = await cp.snapshot();
    const err = await errorOf(await cp.call("DELETE", "/api/v1/pools/west"), 409);
    expect(err.code).toBe("PoolInUse");
    expect(err.details).toEqual({ volumes: ["pinned"] });
    expect(await cp.snapshot()).toEqual(before);
    expect((await cp.call("DELETE", "/api/v1/volumes/pinned")).status).toBe(204);
  });

  it("removes an empty pool but leaves its container alone", async () => {
    const res = await cp.call("DELETE", "/api/v1/pools/west");
    expect(res.status).toBe(204);
    expect((await errorOf(await cp.call("GET", "/api/v1/pools/west"), 404)).code).toBe(
      "PoolNotFound",
    );
    expect(await cp.blobs.getContainerClient("west-disks").exists()).toBe(true);
    const events = await jsonOf<{ items: Array<{ type: string; pool?: string }> }>(
      await cp.call("GET", "/api/v1/events?type=pool-removed"),
      200,
    );
    expect(events.items.map((e) => e.pool)).toEqual(["west"]);
  });

  it("finishes a removal left half-way (REMOVING) and a REMOVING pool takes no replicas", async () => {
    await jsonOf(await register("half", "half-disks"), 201);
    const table = pools(cp.registry);
    const read = (await table.get("half"))!;
    await table.replace({ ...read.value, usage: "REMOVING" }, read.etag);
    const refused = await errorOf(
      await cp.call("POST", "/api/v1/volumes", { name: "late", sizeBytes: 512, pools: ["half"] }),
      409,
    );
    expect(refused.code).toBe("InsufficientPools");
    expect(refused.details).toEqual({ usable: [], unusable: ["half"] });
    expect((await cp.call("DELETE", "/api/v1/pools/half")).status).toBe(204);
    expect(await table.get("half")).toBeUndefined();
    expect(cp.reported).toEqual([]);
  });
});
