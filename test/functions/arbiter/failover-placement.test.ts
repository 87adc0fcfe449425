import { describe, expect, it } from "vitest";
import { chooseFailoverNode } from "../../../functions/arbiter/failover-placement.ts";
import type { NodeRecord } from "../../../functions/registry/nodes.ts";
import type { VolumeRecord } from "../../../functions/registry/volumes.ts";
import { nodeRecord } from "../node-record.ts";

const AT = "2025-01-01T00:00:00.000Z";

const node = (name: string, extra: Partial<NodeRecord> = {}): NodeRecord =>
  nodeRecord(name, { joinedAt: AT, lastReportAt: AT, ...extra });

function volume(requiredNodes: string[] = [], preferredNodes: string[] = []): VolumeRecord {
  return {
    name: "v",
    spec: {
      sizeBytes: 4096,
      replicas: 1,
      pools: [],
      requiredNodes,
      preferredNodes,
      failover: "automatic",
    },
    status: { state: "FENCING", ownerNode: "lost", epoch: 3, replicas: [] },
    leaseId: null,
    createdAt: AT,
    updatedAt: AT,
  };
}

const pick = (v: VolumeRecord, nodes: NodeRecord[], load: Record<string, number> = {}) =>
  chooseFailoverNode(v, nodes, new Map(Object.entries(load)))?.name;

describe("chooseFailoverNode", () => {
  it("takes only READY, uncordoned nodes", () => {
    const nodes = [
      node("lost", { state: "LOST" }),
      node("suspect", { state: "SUSPECT" }),
      node("cordoned", { cordoned: true }),
      node("ok"),
    ];
    expect(pick(volume(), nodes)).toBe("ok");
    expect(pick(volume(), nodes.slice(0, 3))).toBeUndefined();
  });

  it("keeps within requiredNodes", () => {
    expect(pick(volume(["b"]), [node("a"), node("b")], { b: 9 })).toBe("b");
    expect(pick(volume(["c"]), [node("a"), node("b")])).toBeUndefined();
  });

  it("prefers preferredNodes in their order, over load", () => {
    expect(pick(volume([], ["c", "b"]), [node("a"), node("b"), node("c")], { c: 5, b: 1 })).toBe(
      "c",
    );
    expect(
      pick(volume([], ["c", "b"]), [node("a"), node("b"), node("c", { cordoned: true })], { b: 5 }),
    ).toBe("b");
  });

  it("then the least loaded, then by name", () => {
    expect(pick(volume(), [node("a"), node("b")], { a: 2, b: 1 })).toBe("b");
    expect(pick(volume(), [node("b"), node("a")])).toBe("a");
  });

  it("may return the old owner once it is READY again", () => {
    expect(pick(volume(["lost"]), [node("lost")])).toBe("lost");
  });
});
