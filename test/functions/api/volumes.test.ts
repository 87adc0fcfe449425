/**
 * Volumes through the API over Azurite: page blobs made and removed for
 * real, each alone in a container of its own, replicas on distinct pools,
 * patches under concurrency, deletion of attached volumes only when forced,
 * and roll-back of a failed creation.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Volume, VolumeList } from "../../../contract/volume.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { startFaultProxy } from "../../harness/fault-proxy.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

const MiB = 1024 * 1024;
let cp: ControlPlaneFixture;

beforeAll(async () => {
  cp = await startControlPlane();
  for (const name of ["pa", "pb", "pc"]) {
    await cp.addPool(name, `${name}-disks`);
  }
});
afterAll(() => cp?.dispose());

const create = (body: Record<string, unknown>) => cp.call("POST", "/api/v1/volumes", body);

/** Blobs of a container, as `name size`. */
async function blobsIn(container: string): Promise<string[]> {
  const out: string[] = [];
  for await (const b of cp.blobs.getContainerClient(container).listBlobsFlat()) {
    out.push(`${b.name} ${b.properties.contentLength}`);
  }
  return out;
}

/** The container of a replica on one of this file's pools (container `<pool>-disks`). */
function containerOf(replica: { pool: string; id: string }): string {
  return replicaContainerName(`${replica.pool}-disks`, replica.id);
}

function blobOf(volume: Volume, index = 0) {
  const replica = volume.status.replicas[index]!;
  return cp.blobs
    .getContainerClient(containerOf(replica))
    .getPageBlobClient(`${volume.name}/${replica.id}`);
}

describe("volumes", () => {
  it("creates one page blob per replica, on distinct pools, and shows no lease", async () => {
    const res = await create({ name: "db", sizeBytes: 64 * MiB, replicas: 2 });
    const text = await res.clone().text();
    const v = await jsonOf<Volume>(res, 201);
    expect(v.spec).toEqual({
      sizeBytes: 64 * MiB,
      replicas: 2,
      pools: [],
      requiredNodes: [],
      preferredNodes: [],
      failover: "automatic",
    });
    expect(v.status.state).toBe("DETACHED");
    expect(v.status.epoch).toBe(0);
    expect(v.status.ownerNode).toBeNull();
    const used = v.status.replicas.map((r) => r.pool);
    expect(new Set(used).size).toBe(2);
    for (const r of v.status.replicas) {
      expect(r.state).toBe("ONLINE");
      expect(await blobsIn(containerOf(r))).toEqual([`db/${r.id} ${64 * MiB}`]);
      expect(r.uri).toBe(`${cp.azurite.blobEndpoint}/${containerOf(r)}/db/${r.id}`);
      // The pool's own container holds no replica.
      expect(await blobsIn(`${r.pool}-disks`)).toEqual([]);
    }
    const props = await blobOf(v).getProperties();
    expect([props.blobType, props.metadata]).toEqual([
      "PageBlob",
      { pagediskvolume: "db", pagediskreplica: v.status.replicas[0]!.id },
    ]);
    expect(text).not.toMatch(/lease/i);
  });

  it("places replicas on the least loaded pools, or on the pools named", async () => {
    // pa and pb hold one replica each from "db"; pc holds none.
    const one = await jsonOf<Volume>(await create({ name: "spread", sizeBytes: 512 }), 201);
    expect(one.status.replicas.map((r) => r.pool)).toEqual(["pc"]);
    const named = await jsonOf<Volume>(
      await create({ name: "named", sizeBytes: 512, pools: ["pb"] }),
      201,
    );
    expect(named.status.replicas.map((r) => r.pool)).toEqual(["pb"]);
  });

  it("lists and shows volumes", async () => {
    const list = await jsonOf<VolumeList>(await cp.call("GET", "/api/v1/volumes"), 200);
    expect(list.items.map((v) => v.name)).toEqual(["db", "named", "spread"]);
    const shown = await jsonOf<Volume>(await cp.call("GET", "/api/v1/volumes/db"), 200);
    expect(shown).toEqual(list.items[0]);
  });

  it("refuses what cannot be placed, and changes nothing", async () => {
    const before = await cp.snapshot();
    expect((await errorOf(await create({ name: "db", sizeBytes: 512 }), 409)).code).toBe(
      "VolumeExists",
    );
    const unknown = await errorOf(
      await create({ name: "x", sizeBytes: 512, pools: ["nope", "pa"] }),
      404,
    );
    expect([unknown.code, unknown.details]).toEqual(["PoolNotFound", { pools: ["nope"] }]);
    const four = await errorOf(await create({ name: "x", sizeBytes: 512, replicas: 4 }), 400);
    expect(four.code).toBe("InvalidRequest");
    expect(await cp.snapshot()).toEqual(before);
  });

  it("patches placement rules and failover, and keeps every concurrent patch", async () => {
    const patched = await jsonOf<Volume>(
      await cp.call("PATCH", "/api/v1/volumes/db", {
        failover: "manual",
        requiredNodes: ["vm-1", "vm-2"],
      }),
      200,
    );
    expect(patched.spec).toMatchObject({
      failover: "manual",
      requiredNodes: ["vm-1", "vm-2"],
      sizeBytes: 64 * MiB,
    });
    expect(patched.updatedAt > patched.createdAt).toBe(true);
    // Each patch reads and writes conditionally; losers re-read and retry, so all of them land.
    const results = await Promise.all(
      [1, 2, 3, 4, 5, 6].map((i) =>
        cp.call("PATCH", "/api/v1/volumes/db", { preferredNodes: [`vm-${i}`] }),
      ),
    );
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const events = await jsonOf<{ items: unknown[] }>(
      await cp.call("GET", "/api/v1/events?volume=db&type=volume-updated"),
      200,
    );
    expect(events.items).toHaveLength(7);
    const final = await jsonOf<Volume>(await cp.call("GET", "/api/v1/volumes/db"), 200);
    expect(final.spec.requiredNodes).toEqual(["vm-1", "vm-2"]);
    expect(final.spec.preferredNodes).toHaveLength(1);
  });

  it("refuses to delete an attached volume unless forced; forcing breaks the lease and removes the blobs", async () => {
    const v = await jsonOf<Volume>(
      await create({ name: "busy", sizeBytes: MiB, replicas: 2 }),
      201,
    );
    // Attach as the arbiter will: a lease on every replica, recorded with a new epoch.
    const leaseIds = await Promise.all(
      [0, 1].map(async (i) => (await blobOf(v, i).getBlobLeaseClient().acquireLease(-1)).leaseId!),
    );
    const table = volumes(cp.registry);
    const read = (await table.get("busy"))!;
    await table.replace(
      {
        ...read.value,
        status: { ...read.value.status, state: "ATTACHED", ownerNode: "vm-1", epoch: 1 },
        leaseId: leaseIds[0]!,
      },
      read.etag,
    );
    const before = await cp.snapshot();
    const refused = await errorOf(await cp.call("DELETE", "/api/v1/volumes/busy"), 409);
    expect([refused.code, refused.details]).toEqual([
      "VolumeAttached",
      { state: "ATTACHED", ownerNode: "vm-1" },
    ]);
    expect(await cp.snapshot()).toEqual(before);

    expect((await cp.call("DELETE", "/api/v1/volumes/busy?force=true")).status).toBe(204);
    for (const r of v.status.replicas) {
      expect(await cp.blobs.getContainerClient(containerOf(r)).exists()).toBe(false);
    }
    expect(await table.get("busy")).toBeUndefined();
    expect((await errorOf(await cp.call("GET", "/api/v1/volumes/busy"), 404)).code).toBe(
      "VolumeNotFound",
    );
  });

  it("finishes a deletion left half-way, and deletes a CREATING volume only when forced", async () => {
    const table = volumes(cp.registry);
    const made: Volume[] = [];
    for (const [name, state] of [
      ["half-deleted", "DELETING"],
      ["half-created", "CREATING"],
    ] as const) {
      const v = await jsonOf<Volume>(await create({ name, sizeBytes: 512 }), 201);
      made.push(v);
      const read = (await table.get(name))!;
      await table.replace({ ...read.value, status: { ...read.value.status, state } }, read.etag);
      expect(await blobOf(v).exists()).toBe(true);
    }
    expect((await cp.call("DELETE", "/api/v1/volumes/half-deleted")).status).toBe(204);
    expect(await table.get("half-deleted")).toBeUndefined();

    expect((await errorOf(await cp.call("DELETE", "/api/v1/volumes/half-created"), 409)).code).toBe(
      "VolumeBusy",
    );
    expect(
      (
        await errorOf(
          await cp.call("PATCH", "/api/v1/volumes/half-created", { failover: "manual" }),
          409,
        )
      ).code,
    ).toBe("VolumeBusy");
    expect((await cp.call("DELETE", "/api/v1/volumes/half-created?force=true")).status).toBe(204);
    expect(await table.get("half-created")).toBeUndefined();
    for (const r of made.flatMap((v) => v.status.replicas)) {
      expect(await cp.blobs.getContainerClient(containerOf(r)).exists()).toBe(false);
    }
  });

  it("rolls a failed creation back: no record, no blob left on the pools that worked", async () => {
    // Pool pd's account refuses to make the page blob, after its container was made.
    const proxy = await startFaultProxy(cp.azurite.blobEndpoint);
    try {
      await cp.addPool("pd", "pd-disks", proxy.blobEndpoint);
      proxy.inject({ fault: { type: "status", status: 403, code: "AuthorizationFailure" }, only: ["putBlob"] });
      const before = await cp.snapshot();
      const err = await errorOf(
        await create({ name: "doomed", sizeBytes: MiB, replicas: 2, pools: ["pa", "pd"] }),
        502,
      );
      expect(err.code).toBe("StorageFailed");
      expect(err.details).toMatchObject({ pool: "pd", operation: "create page blob", status: 403 });
      expect(proxy.faulted("putBlob")).toBe(1);
      expect(await volumes(cp.registry).get("doomed")).toBeUndefined();
      // The blob made on pa and the containers made on both are gone again, no record or event remains.
      expect(await cp.snapshot()).toEqual(before);
      expect(cp.reported).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
