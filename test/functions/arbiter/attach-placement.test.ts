/**
 * Attach without a node over Azurite: the control plane chooses as
 * failover does (required nodes only, preferred first in their order, the
 * least loaded, by name), or answers NoEligibleNode and changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { NodeState } from "../../../contract/node.ts";
import type { Volume } from "../../../contract/volume.ts";
import { nodes } from "../../../functions/registry/nodes.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";
import { nodeRecord } from "../node-record.ts";

let fx: ControlPlaneFixture;

beforeAll(async () => {
  fx = await startControlPlane();
  await fx.addPool("pa", "pa-disks");
  const node = (name: string, state: NodeState = "READY", cordoned = false) =>
    nodes(fx.registry).insert(nodeRecord(name, { state, cordoned }));
  await node("n-a");
  await node("n-b");
  await node("n-c", "READY", true);
  await node("n-d", "LOST");
});
afterAll(() => fx?.dispose());

async function createVolume(name: string, body: Record<string, unknown> = {}): Promise<Volume> {
  return jsonOf<Volume>(
    await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: 1024 * 1024, ...body }),
    201,
  );
}

const attach = (volume: string, body: unknown = {}) =>
  fx.call("POST", `/api/v1/volumes/${volume}/attach`, body);
const attachAnywhere = async (volume: string) => jsonOf<Attachment>(await attach(volume), 200);
const volume = async (name: string) =>
  jsonOf<Volume>(await fx.call("GET", `/api/v1/volumes/${name}`), 200);

describe("attach without a node", () => {
  it("takes the first eligible preferred node, in the order listed", async () => {
    // n-c (cordoned) and n-d (LOST) are preferred first but may not take it.
    await createVolume("pref", { preferredNodes: ["n-c", "n-d", "n-b", "n-a"] });
    const a = await attachAnywhere("pref");
    expect(a).toMatchObject({ volume: "pref", node: "n-b", epoch: 1 });
    expect((await volume("pref")).status).toMatchObject({ state: "ATTACHED", ownerNode: "n-b" });
  });

  it("then the least loaded node, then by name", async () => {
    // n-b owns `pref`: idle n-a wins.
    await createVolume("free-1");
    expect((await attachAnywhere("free-1")).node).toBe("n-a");
    // Now both own one: by name.
    await createVolume("free-2");
    expect((await attachAnywhere("free-2")).node).toBe("n-a");
    await createVolume("free-3");
    expect((await attachAnywhere("free-3")).node).toBe("n-b");
  });

  it("keeps within requiredNodes, preferred or not", async () => {
    await createVolume("req", { requiredNodes: ["n-b"], preferredNodes: ["n-a"] });
    expect((await attachAnywhere("req")).node).toBe("n-b");
  });

  it("answers NoEligibleNode when no required node may take it, and changes nothing", async () => {
    await createVolume("stuck", { requiredNodes: ["n-c", "n-d"] });
    const before = await fx.snapshot();
    const err = await errorOf(await attach("stuck"), 409);
    expect(err.code).toBe("NoEligibleNode");
    expect(err.details).toEqual({ volume: "stuck", requiredNodes: ["n-c", "n-d"] });
    expect(await fx.snapshot()).toEqual(before);
  });

  it("answers with the attachment as it is for a volume already attached", async () => {
    const first = await attachAnywhere("req");
    expect(await attachAnywhere("req")).toEqual(first);
  });

  it("still refuses a named node outside requiredNodes, and an unknown volume", async () => {
    expect((await errorOf(await attach("stuck", { node: "n-a" }), 409)).code).toBe(
      "NodeNotEligible",
    );
    expect((await errorOf(await attach("nope"), 404)).code).toBe("VolumeNotFound");
  });
});
