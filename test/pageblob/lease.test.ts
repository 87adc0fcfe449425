import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fixture, pattern, setupFixture } from "./fixture.ts";

let fx: Fixture;
beforeAll(async () => {
  fx = await setupFixture();
});
afterAll(() => fx?.close());

describe("PageBlob leases on Azurite", () => {
  it("acquires an infinite lease; writes with its id land, writes without or with another id are LeaseLost", async () => {
    const name = fx.name();
    const pb = fx.open(name);
    await pb.create(65536);
    const id = await pb.acquireLease(-1);
    expect(await pb.properties()).toMatchObject({
      leaseState: "leased",
      leaseDuration: "infinite",
    });

    await pb.putPages(0, pattern(4096, 1), { leaseId: id });
    await expect(pb.putPages(4096, pattern(4096, 2))).rejects.toMatchObject({
      code: "LeaseLost",
      status: 412,
      azureCode: "LeaseIdMissing",
    });
    await expect(
      pb.putPages(4096, pattern(4096, 2), { leaseId: randomUUID() }),
    ).rejects.toMatchObject({
      code: "LeaseLost",
      azureCode: "LeaseIdMismatchWithBlobOperation",
    });
    await expect(pb.clearPages(0, 4096, { leaseId: randomUUID() })).rejects.toMatchObject({
      code: "LeaseLost",
    });
    // Reads need no lease id; only the first write landed.
    const back = Buffer.from(await pb.read(0, 8192));
    expect(back.subarray(0, 4096).equals(pattern(4096, 1))).toBe(true);
    expect(back.subarray(4096).every((b) => b === 0)).toBe(true);
  });

  it("a lease broken from outside fences our next write, and its data does not land", async () => {
    const name = fx.name();
    const pb = fx.open(name);
    await pb.create(65536);
    const id = await pb.acquireLease(-1);
    await pb.putPages(0, pattern(4096, 3), { leaseId: id });

    // The control plane (another client, the official SDK) breaks the lease and takes a new one.
    const outside = fx.container.getBlobClient(name).getBlobLeaseClient();
    await outside.breakLease(0);
    const err = await pb.putPages(4096, pattern(4096, 4), { leaseId: id }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "LeaseLost", status: 412, fatal: true });

    const theirs = await fx.container
      .getBlobClient(name)
      .getBlobLeaseClient(randomUUID())
      .acquireLease(-1);
    await expect(pb.putPages(4096, pattern(4096, 4), { leaseId: id })).rejects.toMatchObject({
      code: "LeaseLost",
      azureCode: "LeaseIdMismatchWithBlobOperation",
    });
    expect(Buffer.from(await pb.read(4096, 4096)).every((b) => b === 0)).toBe(true);
    expect(Buffer.from(await pb.read(0, 4096)).equals(pattern(4096, 3))).toBe(true);
    // Our own renew or acquire now finds someone else's lease: still LeaseLost, not Invalid.
    await expect(pb.renewLease(id)).rejects.toMatchObject({ code: "LeaseLost", status: 409 });
    await expect(pb.acquireLease(-1)).rejects.toMatchObject({
      code: "LeaseLost",
      azureCode: "LeaseAlreadyPresent",
    });
    expect(theirs.leaseId).toBeTruthy();
  });

  it("a writer's reads carry its lease id: after a fence they fail like its writes, never showing the new writer's data", async () => {
    const name = fx.name();
    const pb = fx.open(name);
    await pb.create(65536);
    const id = await pb.acquireLease(-1);
    await pb.putPages(0, pattern(4096, 5), { leaseId: id });
    expect(Buffer.from(await pb.read(0, 4096, undefined, { leaseId: id })).equals(pattern(4096, 5))).toBe(true);
    expect(await pb.pageRanges(0, 65536, { leaseId: id })).toEqual([{ offset: 0, length: 4096 }]);

    // Failover: the control plane breaks our lease, takes a new one, and the new writer writes.
    const blob = fx.container.getBlobClient(name);
    await blob.getBlobLeaseClient().breakLease(0);
    const theirs = await blob.getBlobLeaseClient(randomUUID()).acquireLease(-1);
    await pb.putPages(0, pattern(4096, 6), { leaseId: theirs.leaseId! });

    const err = await pb.read(0, 4096, undefined, { leaseId: id }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "LeaseLost", status: 412, fatal: true });
    await expect(pb.pageRanges(0, 65536, { leaseId: id })).rejects.toMatchObject({ code: "LeaseLost" });
    // Without an id (a reader), or with the current one, reads see the new data.
    expect(Buffer.from(await pb.read(0, 4096)).equals(pattern(4096, 6))).toBe(true);
  });

  it("acquire is idempotent for the same proposed id; release makes the blob writable without an id", async () => {
    const pb = fx.open(fx.name());
    await pb.create(8192);
    const proposed = randomUUID();
    expect(await pb.acquireLease(-1, proposed)).toBe(proposed);
    // What a retried acquire does when the first answer was lost.
    expect(await pb.acquireLease(-1, proposed)).toBe(proposed);
    await pb.renewLease(proposed);
    await pb.releaseLease(proposed);
    expect((await pb.properties()).leaseState).toBe("available");
    await pb.putPages(0, pattern(512, 5));
    expect(Buffer.from(await pb.read(0, 512)).equals(pattern(512, 5))).toBe(true);
  });

  it("breaks a lease with a period and changes a lease id", async () => {
    const pb = fx.open(fx.name());
    await pb.create(8192);
    const first = await pb.acquireLease(15);
    expect((await pb.properties()).leaseDuration).toBe("fixed");
    const second = await pb.changeLease(first, randomUUID());
    expect(second).not.toBe(first);
    await expect(pb.putPages(0, pattern(512, 6), { leaseId: first })).rejects.toMatchObject({
      code: "LeaseLost",
    });
    await pb.putPages(0, pattern(512, 6), { leaseId: second });
    const remaining = await pb.breakLease(10);
    expect(remaining).toBeGreaterThan(0);
    expect((await pb.properties()).leaseState).toBe("breaking");
    expect(await pb.breakLease(0)).toBe(0);
    expect((await pb.properties()).leaseState).toBe("broken");
  });
});
