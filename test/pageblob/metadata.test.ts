/**
 * Blob metadata through our client, on Azurite: what the writer of a
 * replicated volume reads at open (Get Blob Properties) and writes to mark
 * a replica offline (Set Blob Metadata, under the lease), checked from the
 * outside with the official SDK.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fixture, setupFixture } from "./fixture.ts";

let fx: Fixture;
beforeAll(async () => {
  fx = await setupFixture();
});
afterAll(() => fx?.close());

describe("PageBlob metadata on Azurite", () => {
  it("reads the metadata given at creation by another client, names lower-cased", async () => {
    const name = fx.name();
    await fx.container
      .getPageBlobClient(name)
      .create(4096, { metadata: { pagediskvolume: "vol-m", PageDiskReplica: "0123456789ab" } });
    const props = await fx.open(name).properties();
    expect(props.metadata).toEqual({ pagediskvolume: "vol-m", pagediskreplica: "0123456789ab" });
  });

  it("replaces all metadata under the lease; without it or with another id it is LeaseLost and nothing changes", async () => {
    const name = fx.name();
    const pb = fx.open(name);
    const outside = fx.container.getPageBlobClient(name);
    await outside.create(4096, { metadata: { pagediskvolume: "vol-m", pagediskreplica: "aaaaaaaaaaaa" } });
    const leaseId = await pb.acquireLease(-1);

    await pb.setMetadata(
      { pagediskvolume: "vol-m", pagediskreplica: "aaaaaaaaaaaa", pagediskoffline: "bbbbbbbbbbbb,cccccccccccc", pagediskofflineepoch: "3" },
      { leaseId },
    );
    expect((await outside.getProperties()).metadata).toEqual({
      pagediskvolume: "vol-m",
      pagediskreplica: "aaaaaaaaaaaa",
      pagediskoffline: "bbbbbbbbbbbb,cccccccccccc",
      pagediskofflineepoch: "3",
    });

    await expect(pb.setMetadata({ pagediskvolume: "x" })).rejects.toMatchObject({ code: "LeaseLost", status: 412 });
    await expect(pb.setMetadata({ pagediskvolume: "x" }, { leaseId: randomUUID() })).rejects.toMatchObject({
      code: "LeaseLost",
    });
    // Names left out are removed.
    await pb.setMetadata({ pagediskvolume: "vol-m", pagediskreplica: "aaaaaaaaaaaa" }, { leaseId });
    expect((await pb.properties()).metadata).toEqual({ pagediskvolume: "vol-m", pagediskreplica: "aaaaaaaaaaaa" });
  });

  it("refuses names and values the service would change or reject, sending nothing", async () => {
    const name = fx.name();
    const pb = fx.open(name);
    await pb.create(4096);
    const before = (await fx.container.getPageBlobClient(name).getProperties()).etag;
    const refused: Array<Record<string, string>> = [{ "not-an-identifier": "1" }, { ok: "" }, { ok: " padded " }, { ok: "line\nbreak" }, { ok: "é" }];
    for (const bad of refused) {
      await expect(pb.setMetadata(bad)).rejects.toMatchObject({ code: "Invalid" });
    }
    expect((await fx.container.getPageBlobClient(name).getProperties()).etag).toBe(before);
  });
});
