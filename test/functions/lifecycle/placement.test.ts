import { describe, expect, it } from "vitest";
import type { PoolHealth, PoolUsage } from "../../../contract/pool.ts";
import { ApiError } from "../../../functions/http/api-error.ts";
import { placeReplicas } from "../../../functions/lifecycle/placement.ts";
import type { PoolRecord } from "../../../functions/registry/pools.ts";

function pool(
  name: string,
  health: PoolHealth = "UNKNOWN",
  usage: PoolUsage = "IN_USE",
): PoolRecord {
  return {
    name,
    account: "acct",
    blobEndpoint: "https://acct.blob.core.windows.net",
    container: name,
    authKind: "connectionString",
    connectionString: "UseDevelopmentStorage=true",
    health,
    usage,
    annotations: {},
    createdAt: "2025-01-01T00:00:00.000Z",
    updatedAt: "2025-01-01T00:00:00.000Z",
  };
}

const names = (ps: PoolRecord[]) => ps.map((p) => p.name);

function refusal(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error("expected a refusal");
}

describe("placeReplicas", () => {
  it("prefers healthy pools, then the least loaded, then by name", () => {
    const pools = [pool("d", "SUSPECT"), pool("c"), pool("b", "GOOD"), pool("a")];
    expect(names(placeReplicas({ replicas: 3, pools: [] }, pools, new Map()))).toEqual([
      "b",
      "a",
      "c",
    ]);
    expect(names(placeReplicas({ replicas: 2, pools: [] }, pools, new Map([["a", 5]])))).toEqual([
      "b",
      "c",
    ]);
  });

  it("never uses a BAD pool or one that is not IN_USE", () => {
    const pools = [pool("a", "BAD"), pool("b", "GOOD", "RELEASING"), pool("c", "SUSPECT")];
    expect(names(placeReplicas({ replicas: 1, pools: [] }, pools, new Map()))).toEqual(["c"]);
    const err = refusal(() => placeReplicas({ replicas: 2, pools: [] }, pools, new Map()));
    expect([err.code, err.details]).toEqual([
      "InsufficientPools",
      { usable: ["c"], unusable: ["a", "b"] },
    ]);
  });

  it("keeps to the pools named, and names the unknown ones", () => {
    const pools = [pool("a", "GOOD"), pool("b"), pool("c")];
    expect(names(placeReplicas({ replicas: 2, pools: ["c", "b"] }, pools, new Map()))).toEqual([
      "b",
      "c",
    ]);
    const err = refusal(() =>
      placeReplicas({ replicas: 1, pools: ["z", "a", "y"] }, pools, new Map()),
    );
    expect([err.code, err.details]).toEqual(["PoolNotFound", { pools: ["z", "y"] }]);
  });
});
