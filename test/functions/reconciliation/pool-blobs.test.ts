/**
 * The orphan delete is conditional on what was checked: a blob written
 * after its check (a writer the check did not see) is left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pools } from "../../../functions/registry/pools.ts";
import { deleteCheckedBlob, listPoolBlobs } from "../../../functions/storage/pool-blobs.ts";
import { type ControlPlaneFixture, startControlPlane } from "../fixture.ts";

let fx: ControlPlaneFixture;

beforeAll(async () => {
  fx = await startControlPlane();
  await fx.addPool("pa", "pa-disks");
});
afterAll(() => fx?.dispose());

const poolRecord = async () => (await pools(fx.registry).get("pa"))!.value;

describe("deleteCheckedBlob", () => {
  it("leaves a blob written since its check, and deletes it at its new ETag", async () => {
    const blob = fx.blobs.getContainerClient("pa-disks").getPageBlobClient("w/0123456789ab");
    await blob.create(4096, { metadata: { pagediskvolume: "w" } });
    const pool = await poolRecord();
    const [checked] = await listPoolBlobs(pool);
    expect(checked).toMatchObject({
      name: "w/0123456789ab",
      sizeBytes: 4096,
      leaseState: "available",
      metadata: { pagediskvolume: "w" },
    });

    await blob.uploadPages(Buffer.alloc(512, 7), 0, 512);
    expect(await deleteCheckedBlob(pool, checked!.name, checked!.etag, false)).toBe("changed");
    expect(await blob.exists()).toBe(true);

    const [fresh] = await listPoolBlobs(pool);
    expect(await deleteCheckedBlob(pool, fresh!.name, fresh!.etag, false)).toBe("deleted");
    expect(await blob.exists()).toBe(false);
    expect(await deleteCheckedBlob(pool, fresh!.name, fresh!.etag, false)).toBe("gone");
  });

  it("breaks a lease only when told to", async () => {
    const blob = fx.blobs.getContainerClient("pa-disks").getPageBlobClient("l/0123456789ab");
    await blob.create(4096);
    await blob.getBlobLeaseClient().acquireLease(-1);
    const pool = await poolRecord();
    const [checked] = await listPoolBlobs(pool);
    expect(checked!.leaseState).toBe("leased");
    await expect(
      deleteCheckedBlob(pool, checked!.name, checked!.etag, false),
    ).rejects.toMatchObject({ name: "StorageFailure", status: 412 });
    expect(await blob.exists()).toBe(true);
    expect(await deleteCheckedBlob(pool, checked!.name, checked!.etag, true)).toBe("deleted");
    expect(await blob.exists()).toBe(false);
  });
});
