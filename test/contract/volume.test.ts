import { describe, expect, it } from "vitest";
import { MAX_VOLUME_BYTES, Volume, VolumeCreate, VolumePatch } from "../../contract/volume.ts";

const TiB = 2 ** 40;

function issues(result: {
  success: boolean;
  error?: { issues: Array<{ path: PropertyKey[]; message: string }> };
}) {
  return (result.error?.issues ?? []).map((i) => `${i.path.join(".")}: ${i.message}`);
}

describe("VolumeCreate", () => {
  it("fills the defaults: one replica, any pool, any node, automatic failover", () => {
    expect(VolumeCreate.parse({ name: "db", sizeBytes: 4096 })).toEqual({
      name: "db",
      sizeBytes: 4096,
      replicas: 1,
      pools: [],
      requiredNodes: [],
      preferredNodes: [],
      failover: "automatic",
    });
  });

  it.each([
    [512, true],
    [8 * TiB, true],
    [MAX_VOLUME_BYTES, true],
    [0, false],
    [-512, false],
    [511, false],
    [513, false],
    [8 * TiB + 512, false],
    [1.5, false],
    [2 ** 53, false],
  ])("sizeBytes %d valid: %s", (sizeBytes, valid) => {
    expect(VolumeCreate.safeParse({ name: "v", sizeBytes }).success).toBe(valid);
  });

  it("names the rule a size breaks", () => {
    expect(issues(VolumeCreate.safeParse({ name: "v", sizeBytes: 1000 }))).toEqual([
      "sizeBytes: sizeBytes must be a multiple of 512",
    ]);
    expect(issues(VolumeCreate.safeParse({ name: "v", sizeBytes: 16 * TiB }))).toEqual([
      `sizeBytes: sizeBytes must be at most 8 TiB (${MAX_VOLUME_BYTES})`,
    ]);
  });

  it.each([["512"], [null], [true], [[512]]])(
    "refuses sizeBytes of the wrong type: %j",
    (sizeBytes) => {
      expect(VolumeCreate.safeParse({ name: "v", sizeBytes }).success).toBe(false);
    },
  );

  it.each([
    [0, false],
    [1, true],
    [3, true],
    [4, false],
  ])("replicas %d valid: %s", (replicas, valid) => {
    expect(VolumeCreate.safeParse({ name: "v", sizeBytes: 512, replicas }).success).toBe(valid);
  });

  it.each(["db", "a", "db-01", "x".repeat(63)])("accepts the name %s", (name) => {
    expect(VolumeCreate.safeParse({ name, sizeBytes: 512 }).success).toBe(true);
  });

  it.each(["", "DB", "-db", "db-", "db_1", "db.1", "x".repeat(64), "a/b", "é"])(
    "refuses the name %j",
    (name) => {
      expect(VolumeCreate.safeParse({ name, sizeBytes: 512 }).success).toBe(false);
    },
  );

  it("refuses unknown fields, so a typo is not silently dropped", () => {
    expect(issues(VolumeCreate.safeParse({ name: "v", sizeBytes: 512, size: 512 }))).toEqual([
      ': Unrecognized key: "size"',
    ]);
  });

  it("needs as many distinct pools as replicas when pools are named", () => {
    expect(
      issues(VolumeCreate.safeParse({ name: "v", sizeBytes: 512, replicas: 2, pools: ["a"] })),
    ).toEqual(["pools: 2 replicas need at least 2 distinct pools, 1 listed"]);
    expect(
      issues(VolumeCreate.safeParse({ name: "v", sizeBytes: 512, replicas: 2, pools: ["a", "a"] })),
    ).toContain("pools: pools lists a name twice");
    expect(
      VolumeCreate.safeParse({ name: "v", sizeBytes: 512, replicas: 2, pools: ["a", "b", "c"] })
        .success,
    ).toBe(true);
  });

  it("refuses a node listed twice and a failover policy it does not know", () => {
    expect(
      VolumeCreate.safeParse({ name: "v", sizeBytes: 512, requiredNodes: ["n1", "n1"] }).success,
    ).toBe(false);
    expect(
      VolumeCreate.safeParse({ name: "v", sizeBytes: 512, failover: "sometimes" }).success,
    ).toBe(false);
    expect(
      VolumeCreate.safeParse({ name: "v", sizeBytes: 512, preferredNodes: ["vm-1.internal"] })
        .success,
    ).toBe(true);
  });
});

describe("VolumePatch", () => {
  it("takes the mutable fields", () => {
    expect(VolumePatch.parse({ failover: "manual", requiredNodes: ["n1"] })).toEqual({
      failover: "manual",
      requiredNodes: ["n1"],
    });
    expect(VolumePatch.parse({ replicas: 3 })).toEqual({ replicas: 3 });
  });

  it("refuses an empty patch and immutable fields", () => {
    expect(VolumePatch.safeParse({}).success).toBe(false);
    expect(issues(VolumePatch.safeParse({ sizeBytes: 1024 }))).toEqual([
      ': Unrecognized key: "sizeBytes"',
    ]);
    expect(VolumePatch.safeParse({ replicas: 4 }).success).toBe(false);
    expect(VolumePatch.safeParse({ replicas: 0 }).success).toBe(false);
    expect(VolumePatch.safeParse({ name: "other" }).success).toBe(false);
  });
});

describe("Volume", () => {
  it("accepts a volume as the control plane renders it", () => {
    const volume = {
      name: "db",
      spec: {
        sizeBytes: 512,
        replicas: 1,
        pools: [],
        requiredNodes: [],
        preferredNodes: [],
        failover: "manual",
      },
      status: {
        state: "ATTACHED",
        ownerNode: "vm-1",
        epoch: 3,
        replicas: [
          {
            id: "0123456789ab",
            pool: "p1",
            uri: "https://a.blob.core.windows.net/c/db/0123456789ab",
            state: "ONLINE",
          },
        ],
      },
      createdAt: "2025-01-01T00:00:00.000Z",
      updatedAt: "2025-01-01T00:00:01.000Z",
    };
    expect(Volume.parse(volume)).toEqual(volume);
    expect(
      Volume.safeParse({ ...volume, status: { ...volume.status, state: "HALF" } }).success,
    ).toBe(false);
    expect(Volume.safeParse({ ...volume, status: { ...volume.status, epoch: -1 } }).success).toBe(
      false,
    );
  });
});
