/**
 * Attach and detach over Azurite: one winner among racing attaches, the
 * blob leases held by the winner only, and fencing that the storage
 * service enforces on writers of older epochs.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { NodeState } from "../../../contract/node.ts";
import type { Volume } from "../../../contract/volume.ts";
import { nodes } from "../../../functions/registry/nodes.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { restStatus } from "../../../functions/rest-error.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";
import { nodeRecord } from "../node-record.ts";

const RACERS = 50;
let cp: ControlPlaneFixture;

beforeAll(async () => {
  cp = await startControlPlane();
  for (const name of ["pa", "pb"]) {
    await cp.addPool(name, `${name}-disks`);
  }
  const table = nodes(cp.registry);
  const node = (name: string, state: NodeState = "READY", cordoned = false) =>
    table.insert(nodeRecord(name, { state, cordoned }));
  for (let i = 0; i < RACERS; i++) await node(`vm-${i}`);
  await node("vm-cordoned", "READY", true);
  await node("vm-lost", "LOST");
});
afterAll(() => cp?.dispose());

const attach = (volume: string, node: unknown) =>
  cp.call("POST", `/api/v1/volumes/${volume}/attach`, { node });
const detach = (volume: string) => cp.call("POST", `/api/v1/volumes/${volume}/detach`);

async function createVolume(name: string, body: Record<string, unknown> = {}): Promise<Volume> {
  return jsonOf<Volume>(
    await cp.call("POST", "/api/v1/volumes", {
      name,
      sizeBytes: 1024 * 1024,
      replicas: 2,
      ...body,
    }),
    201,
  );
}

function blobs(v: Volume): PageBlobClient[] {
  return v.status.replicas.map((r) =>
    cp.blobs
      .getContainerClient(replicaContainerName(`${r.pool}-disks`, r.id))
      .getPageBlobClient(`${v.name}/${r.id}`),
  );
}

/** HTTP status of one 512-byte Put Page, with `leaseId` or without any. */
async function writeStatus(blob: PageBlobClient, leaseId?: string): Promise<number> {
  try {
    const res = await blob.uploadPages(Buffer.alloc(512, 1), 0, 512, {
      ...(leaseId ? { conditions: { leaseId } } : {}),
    });
    return res._response.status;
  } catch (err) {
    return restStatus(err) ?? 0;
  }
}

describe("attach", () => {
  it(`lets exactly one of ${RACERS} racing nodes win; the others are told the owner`, async () => {
    const v = await createVolume("raced");
    const responses = await Promise.all(
      Array.from({ length: RACERS }, (_, i) => attach("raced", `vm-${i}`)),
    );
    const winners = responses.filter((r) => r.status === 200);
    expect(winners).toHaveLength(1);
    const won = await jsonOf<Attachment>(winners[0]!, 200);
    expect(won.epoch).toBe(1);
    for (const res of responses.filter((r) => r.status !== 200)) {
      const err = await errorOf(res, 409);
      expect(err.code).toBe("VolumeAttached");
      expect((err.details as { ownerNode: string }).ownerNode).toBe(won.node);
    }

    const record = (await volumes(cp.registry).get("raced"))!.value;
    expect(record.status).toMatchObject({ state: "ATTACHED", ownerNode: won.node, epoch: 1 });
    expect(record.leaseId).toBe(won.leaseId);
    for (const blob of blobs(v)) {
      const props = await blob.getProperties();
      expect([props.leaseState, props.leaseDuration]).toEqual(["leased", "infinite"]);
      expect(await writeStatus(blob, won.leaseId)).toBe(201);
      expect(await writeStatus(blob)).toBe(412);
      expect(await writeStatus(blob, crypto.randomUUID())).toBe(412);
    }
    const shown = await cp.call("GET", "/api/v1/volumes/raced");
    expect(await shown.text()).not.toContain(won.leaseId);
  });

  it("is idempotent for the owner: same lease, same epoch", async () => {
    const owner = (await volumes(cp.registry).get("raced"))!.value.status.ownerNode!;
    const first = await jsonOf<Attachment>(await attach("raced", owner), 200);
    const again = await jsonOf<Attachment>(await attach("raced", owner), 200);
    expect(again).toEqual(first);
    expect(first.epoch).toBe(1);
  });

  it("after detach and attach elsewhere, the old lease and no lease both fail with 412", async () => {
    const v = await createVolume("moved");
    const first = await jsonOf<Attachment>(await attach("moved", "vm-1"), 200);
    const detached = await jsonOf<Volume>(await detach("moved"), 200);
    expect(detached.status).toMatchObject({ state: "DETACHED", ownerNode: null, epoch: 2 });
    for (const blob of blobs(v)) expect((await blob.getProperties()).leaseState).toBe("available");

    const second = await jsonOf<Attachment>(await attach("moved", "vm-2"), 200);
    expect(second.epoch).toBe(3);
    expect(second.leaseId).not.toBe(first.leaseId);
    for (const blob of blobs(v)) {
      expect(await writeStatus(blob, first.leaseId)).toBe(412);
      expect(await writeStatus(blob)).toBe(412);
      expect(await writeStatus(blob, second.leaseId)).toBe(201);
    }
    // Detaching twice is a no-op.
    expect((await jsonOf<Volume>(await detach("moved"), 200)).status.epoch).toBe(4);
    expect((await jsonOf<Volume>(await detach("moved"), 200)).status.epoch).toBe(4);
  });

  it("breaks a lease it does not know (a writer from outside) and fences it", async () => {
    const v = await createVolume("squatted");
    const [blob] = blobs(v);
    const stranger = (await blob!.getBlobLeaseClient().acquireLease(-1)).leaseId!;
    const won = await jsonOf<Attachment>(await attach("squatted", "vm-3"), 200);
    expect(await writeStatus(blob!, stranger)).toBe(412);
    expect(await writeStatus(blob!, won.leaseId)).toBe(201);
  });

  it("refuses nodes that may not take the volume, and changes nothing", async () => {
    await createVolume("picky", { requiredNodes: ["vm-5"] });
    const before = await cp.snapshot();
    const cases: Array<[string, unknown, number, string]> = [
      ["picky", "vm-nope", 404, "NodeNotFound"],
      ["picky", "vm-cordoned", 409, "NodeNotEligible"],
      ["picky", "vm-lost", 409, "NodeNotEligible"],
      ["picky", "vm-6", 409, "NodeNotEligible"],
      ["picky", "VM 6", 400, "InvalidRequest"],
      ["picky", 6, 400, "InvalidRequest"],
      ["nope", "vm-5", 404, "VolumeNotFound"],
    ];
    for (const [volume, node, status, code] of cases) {
      expect((await errorOf(await attach(volume, node), status)).code).toBe(code);
    }
    expect(
      (await errorOf(await cp.call("POST", "/api/v1/volumes/picky/attach", "{"), 400)).code,
    ).toBe("InvalidJson");
    expect((await errorOf(await detach("nope"), 404)).code).toBe("VolumeNotFound");
    expect(await cp.snapshot()).toEqual(before);
    expect((await jsonOf<Attachment>(await attach("picky", "vm-5"), 200)).node).toBe("vm-5");
  });

  it("rolls back to DETACHED, leases dropped, when a replica cannot be leased", async () => {
    const v = await createVolume("half-leased", { pools: ["pa", "pb"] });
    const [onA, onB] = blobs(v);
    // The blob on pb disappears behind the control plane's back.
    await onB!.delete();
    const err = await errorOf(await attach("half-leased", "vm-7"), 502);
    expect(err.code).toBe("StorageFailed");
    expect(err.details).toMatchObject({ pool: "pb", operation: "take lease", status: 404 });
    const record = (await volumes(cp.registry).get("half-leased"))!.value;
    expect(record.status).toMatchObject({ state: "DETACHED", ownerNode: null });
    expect(record.leaseId).toBeNull();
    expect((await onA!.getProperties()).leaseState).toBe("available");
    expect(cp.reported).toEqual([]);
  });

  it("keeps an attached volume from deletion until forced, and from another attach", async () => {
    await createVolume("held");
    await jsonOf(await attach("held", "vm-8"), 200);
    expect((await errorOf(await attach("held", "vm-9"), 409)).details).toMatchObject({
      ownerNode: "vm-8",
    });
    expect((await errorOf(await cp.call("DELETE", "/api/v1/volumes/held"), 409)).code).toBe(
      "VolumeAttached",
    );
    expect((await cp.call("DELETE", "/api/v1/volumes/held?force=true")).status).toBe(204);
  });
});
