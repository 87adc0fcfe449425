/**
 * A pool's blobs as the reconciliation sees them: its own container and
 * one container per replica, each blob named by its path in the account.
 * The orphan delete is conditional on what was checked: a blob written
 * after its check (a writer the check did not see) is left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pools } from "../../../functions/registry/pools.ts";
import {
  deleteCheckedBlob,
  deleteEmptyReplicaContainer,
  listPoolBlobs,
  poolBlobExists,
} from "../../../functions/storage/pool-blobs.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { type ControlPlaneFixture, startControlPlane } from "../fixture.ts";

let fx: ControlPlaneFixture;

beforeAll(async () => {
  fx = await startControlPlane();
  await fx.addPool("pa", "pa-disks");
});
afterAll(() => fx?.dispose());

const poolRecord = async () => (await pools(fx.registry).get("pa"))!.value;

/** The container replica `id` of pool pa lives in, made if missing. */
async function replicaContainer(id: string, metadata: Record<string, string> = {}) {
  const container = fx.blobs.getContainerClient(replicaContainerName("pa-disks", id));
  await container.createIfNotExists({ metadata });
  return container;
}

/** The one listed entry at `path`. */
async function listed(path: string) {
  const found = (await listPoolBlobs(await poolRecord())).filter((b) => b.name === path);
  expect(found).toHaveLength(1);
  return found[0]!;
}

async function exists(container: string): Promise<boolean> {
  return fx.blobs.getContainerClient(container).exists();
}

describe("listPoolBlobs", () => {
  it("lists the pool's own container and its replica containers, never another pool's", async () => {
    const replica = await replicaContainer("0000000000a1");
    await replica.getPageBlobClient("v/0000000000a1").create(4096, {
      metadata: { pagediskvolume: "v" },
    });
    await fx.blobs.getContainerClient("pa-disks").getBlockBlobClient("notes.txt").upload("hi", 2);
    // A pool whose container is pa-disks-old shares pa-disks' prefix: its
    // replica containers are not pa's, nor is a name one hex digit too long.
    for (const other of ["pa-disks-old-0000000000a2", "pa-disks-0000000000a3f"]) {
      const c = fx.blobs.getContainerClient(other);
      await c.create();
      await c.getPageBlobClient("w/0000000000a2").create(4096);
    }

    const names = (await listPoolBlobs(await poolRecord())).map((b) => b.name).sort();
    expect(names).toEqual(["pa-disks-0000000000a1/v/0000000000a1", "pa-disks/notes.txt"]);
    expect(await listed("pa-disks-0000000000a1/v/0000000000a1")).toMatchObject({
      container: "pa-disks-0000000000a1",
      blobName: "v/0000000000a1",
      sizeBytes: 4096,
      leaseState: "available",
      metadata: { pagediskvolume: "v" },
    });
    expect(await listed("pa-disks/notes.txt")).toMatchObject({
      container: "pa-disks",
      blobName: "notes.txt",
      sizeBytes: 2,
    });

    const pool = await poolRecord();
    expect(await poolBlobExists(pool, "pa-disks-0000000000a1/v/0000000000a1")).toBe(true);
    expect(await poolBlobExists(pool, "pa-disks/v/0000000000a1")).toBe(false);
    expect(await poolBlobExists(pool, "pa-disks/notes.txt")).toBe(true);
    expect(await poolBlobExists(pool, "pa-disks-0000000000a1/notes.txt")).toBe(false);
  });

  it("lists a replica container with no blob as `<container>/`, with its metadata", async () => {
    await replicaContainer("0000000000b1", { pagediskvolume: "e", pagediskreplica: "0000000000b1" });
    expect(await listed("pa-disks-0000000000b1/")).toMatchObject({
      container: "pa-disks-0000000000b1",
      blobName: "",
      sizeBytes: 0,
      leaseState: "available",
      metadata: { pagediskvolume: "e", pagediskreplica: "0000000000b1" },
    });
    await fx.blobs.getContainerClient("pa-disks-0000000000b1").delete();
  });

});

describe("deleteCheckedBlob", () => {
  it("leaves a blob written since its check, and deletes it at its new ETag", async () => {
    const blob = (await replicaContainer("0123456789ab")).getPageBlobClient("w/0123456789ab");
    await blob.create(4096, { metadata: { pagediskvolume: "w" } });
    const pool = await poolRecord();
    const checked = await listed("pa-disks-0123456789ab/w/0123456789ab");

    await blob.uploadPages(Buffer.alloc(512, 7), 0, 512);
    expect(await deleteCheckedBlob(pool, checked, false)).toBe("changed");
    expect(await blob.exists()).toBe(true);

    const fresh = await listed("pa-disks-0123456789ab/w/0123456789ab");
    expect(await deleteCheckedBlob(pool, fresh, false)).toBe("deleted");
    expect(await blob.exists()).toBe(false);
    expect(await deleteCheckedBlob(pool, fresh, false)).toBe("gone");
  });

  it("breaks a lease only when told to", async () => {
    const blob = (await replicaContainer("0123456789ac")).getPageBlobClient("l/0123456789ac");
    await blob.create(4096);
    await blob.getBlobLeaseClient().acquireLease(-1);
    const pool = await poolRecord();
    const checked = await listed("pa-disks-0123456789ac/l/0123456789ac");
    expect(checked.leaseState).toBe("leased");
    await expect(deleteCheckedBlob(pool, checked, false)).rejects.toMatchObject({
      name: "StorageFailure",
      status: 412,
    });
    expect(await blob.exists()).toBe(true);
    expect(await deleteCheckedBlob(pool, checked, true)).toBe("deleted");
    expect(await blob.exists()).toBe(false);
  });

  it("deletes an empty replica container only while it is empty and unchanged", async () => {
    const container = await replicaContainer("0000000000c1");
    const pool = await poolRecord();
    const checked = await listed("pa-disks-0000000000c1/");

    await container.getBlockBlobClient("late").upload("x", 1);
    expect(await deleteCheckedBlob(pool, checked, false)).toBe("changed");
    expect(await container.exists()).toBe(true);
    await container.getBlockBlobClient("late").delete();

    // A check made before the container's last change (a policy set, say):
    // Delete Container is conditional on that time.
    const stale = { ...checked, lastModified: new Date(checked.lastModified.getTime() - 1000) };
    expect(await deleteCheckedBlob(pool, stale, false)).toBe("changed");
    expect(await container.exists()).toBe(true);

    const fresh = await listed("pa-disks-0000000000c1/");
    expect(await deleteCheckedBlob(pool, fresh, false)).toBe("deleted");
    expect(await container.exists()).toBe(false);
    expect(await deleteCheckedBlob(pool, fresh, false)).toBe("gone");
  });
});

describe("deleteEmptyReplicaContainer", () => {
  it("deletes a replica container once it holds no blob, and nothing else", async () => {
    const container = await replicaContainer("0000000000d1");
    await container.getBlockBlobClient("x").upload("x", 1);
    const pool = await poolRecord();
    expect(await deleteEmptyReplicaContainer(pool, "pa-disks-0000000000d1")).toBe(false);
    expect(await container.exists()).toBe(true);
    await container.getBlockBlobClient("x").delete();
    expect(await deleteEmptyReplicaContainer(pool, "pa-disks-0000000000d1")).toBe(true);
    expect(await container.exists()).toBe(false);
    expect(await deleteEmptyReplicaContainer(pool, "pa-disks-0000000000d1")).toBe(true);

    await expect(deleteEmptyReplicaContainer(pool, "pa-disks")).rejects.toThrow(
      "pa-disks is not a replica container of pool pa",
    );
    expect(await exists("pa-disks")).toBe(true);
  });
});
