import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openPageBlob } from "../../agent/pageblob/connect.ts";
import { SharedKeySas } from "../../agent/pageblob/sas.ts";
import { startFaultProxy } from "../harness/fault-proxy.ts";
import { type Fixture, instantClock, pattern, setupFixture } from "./fixture.ts";

let fx: Fixture;
beforeAll(async () => {
  fx = await setupFixture();
});
afterAll(() => fx?.close());

describe("blob gone", () => {
  it("a blob deleted from outside is BlobGone for reads, writes, properties and page ranges", async () => {
    const name = fx.name();
    const pb = fx.open(name);
    await pb.create(8192);
    await pb.putPages(0, pattern(512, 1));
    await fx.container.getBlobClient(name).delete();
    for (const call of [
      () => pb.read(0, 512),
      () => pb.putPages(0, pattern(512, 2)),
      () => pb.clearPages(0, 512),
      () => pb.properties(),
      () => pb.pageRanges(0, 8192),
    ]) {
      await expect(call()).rejects.toMatchObject({ code: "BlobGone", status: 404, fatal: true });
    }
  });

  it("a missing container is BlobGone", async () => {
    const pb = openPageBlob("nosuchcontainer/nothing.vhd", {
      connectionString: fx.azurite.connectionString,
      clock: instantClock,
    });
    try {
      await expect(pb.read(0, 512)).rejects.toMatchObject({
        code: "BlobGone",
        azureCode: "ContainerNotFound",
      });
    } finally {
      await pb.close();
    }
  });
});

describe("forbidden", () => {
  it("an expired SAS, a tampered signature and a read-only SAS on a write are Forbidden", async () => {
    const name = fx.name();
    await fx.open(name).create(8192);
    const expired = fx.sasUrl(name, {
      startsOn: new Date(Date.now() - 7_200_000),
      expiresOn: new Date(Date.now() - 3_600_000),
    });
    const tampered = fx
      .sasUrl(name)
      .replace(/sig=[^&]+/, "sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D");
    const readOnly = fx.sasUrl(name, { permissions: "r" });
    const clients = [expired, tampered, readOnly].map((u) =>
      openPageBlob(u, { clock: instantClock }),
    );
    try {
      const [e, t, r] = clients as [(typeof clients)[0], (typeof clients)[0], (typeof clients)[0]];
      await expect(e.read(0, 512)).rejects.toMatchObject({
        code: "Forbidden",
        status: 403,
        fatal: true,
      });
      await expect(t.putPages(0, pattern(512, 3))).rejects.toMatchObject({
        code: "Forbidden",
        status: 403,
      });
      expect((await r.read(0, 512)).length).toBe(512);
      await expect(r.putPages(0, pattern(512, 3))).rejects.toMatchObject({ code: "Forbidden" });
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

describe("connection string mode (Azurite's development account)", () => {
  it("resolves container/blob against the endpoint and works end to end on minted SAS tokens", async () => {
    const name = fx.name();
    const pb = openPageBlob(`${fx.container.containerName}/${name}`, {
      connectionString: fx.azurite.connectionString,
    });
    try {
      await pb.create(1 << 20);
      const id = await pb.acquireLease(-1);
      await pb.putPages(4096, pattern(8192, 4), { leaseId: id });
      expect(Buffer.from(await pb.read(4096, 8192)).equals(pattern(8192, 4))).toBe(true);
      expect(await pb.pageRanges(0, 1 << 20)).toEqual([{ offset: 4096, length: 8192 }]);
      await pb.releaseLease(id);
      // The other client sees what we wrote.
      const seen = await fx.container.getBlobClient(name).downloadToBuffer(4096, 8192);
      expect(seen.equals(pattern(8192, 4))).toBe(true);
    } finally {
      await pb.close();
    }
  });

  it("accepts a full blob URL plus the connection string as its credential", async () => {
    const name = fx.name();
    const url = `${fx.azurite.blobEndpoint}/${fx.container.containerName}/${name}`;
    const pb = openPageBlob(url, { connectionString: fx.azurite.connectionString });
    try {
      await pb.create(4096);
      expect((await pb.properties()).size).toBe(4096);
    } finally {
      await pb.close();
    }
  });

  it("mints a new SAS before the old one expires, and the service takes both", async () => {
    const name = fx.name();
    let now = Date.now();
    const clock = { now: () => now, sleep: async () => {} };
    const proxy = await startFaultProxy(fx.azurite.blobEndpoint);
    const expiries: string[] = [];
    proxy.onRequest((r) => expiries.push(r.url.searchParams.get("se") ?? "none"));
    const pb = openPageBlob(`${fx.container.containerName}/${name}`, {
      connectionString: fx.azurite.connectionString.replace(
        fx.azurite.blobEndpoint,
        proxy.blobEndpoint,
      ),
      // The start time is backdated by skewMs; a large one keeps tokens valid while the fake clock runs ahead.
      mintedSas: { lifetimeMs: 10 * 60_000, renewBeforeMs: 2 * 60_000, skewMs: 60 * 60_000, clock },
    });
    try {
      await pb.create(4096);
      now += 7 * 60_000;
      await pb.putPages(0, pattern(512, 5));
      now += 2 * 60_000;
      await pb.putPages(512, pattern(512, 6));
      expect(
        Buffer.from(await pb.read(0, 1024)).equals(
          Buffer.concat([pattern(512, 5), pattern(512, 6)]),
        ),
      ).toBe(true);
      // Same token until 2 minutes before expiry, then a new one 9 minutes later.
      expect(expiries).toHaveLength(4);
      expect(expiries[1]).toBe(expiries[0]);
      expect(expiries[2]).not.toBe(expiries[1]);
      expect(expiries[3]).toBe(expiries[2]);
      expect(Date.parse(expiries[2]!) - Date.parse(expiries[0]!)).toBe(9 * 60_000);
    } finally {
      await pb.close();
      await proxy.close();
    }
  });

  it("SharedKeySas reports when its token expires", () => {
    let now = 1_700_000_000_000;
    const sas = new SharedKeySas(fx.azurite.accountName, fx.azurite.accountKey, "c", "b", {
      lifetimeMs: 600_000,
      clock: { now: () => now, sleep: async () => {} },
    });
    expect(sas.expiresAt).toBe(0);
    const first = sas.query();
    const q = new URLSearchParams(first);
    expect(sas.expiresAt).toBe(now + 600_000);
    expect(q.get("sp")).toBe("rcw");
    expect(q.get("sr")).toBe("b");
    now += 1000;
    expect(sas.query()).toBe(first);
  });
});
