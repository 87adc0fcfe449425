/**
 * Conditional writes against Azurite's Table service: the typed outcomes
 * every caller relies on, and the record codecs' round trips.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  fromInt64,
  int64,
  MAX_STRING_PROPERTY_CHARS,
  packJson,
} from "../../../functions/registry/fields.ts";
import { nodes } from "../../../functions/registry/nodes.ts";
import { RegistryError } from "../../../functions/registry/registry-error.ts";
import { retryOnConflict } from "../../../functions/registry/retry.ts";
import { deleteRow, insertRow, readRow, replaceRow } from "../../../functions/registry/rows.ts";
import { openRegistry, type Registry } from "../../../functions/registry/tables.ts";
import { type VolumeRecord, volumes } from "../../../functions/registry/volumes.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";

let azurite: Azurite;
let registry: Registry;
beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  registry = await openRegistry(azurite.connectionString);
});
afterAll(() => azurite?.dispose());

function volume(name: string, patch: Partial<VolumeRecord> = {}): VolumeRecord {
  return {
    name,
    spec: {
      sizeBytes: 8 * 2 ** 40,
      replicas: 2,
      pools: ["p1", "p2"],
      requiredNodes: [],
      preferredNodes: ["vm-1"],
      failover: "automatic",
    },
    status: {
      state: "DETACHED",
      ownerNode: null,
      epoch: 0,
      replicas: [
        {
          id: "aaaaaaaaaaaa",
          pool: "p1",
          uri: "http://127.0.0.1/a/c/v/aaaaaaaaaaaa",
          state: "ONLINE",
        },
        {
          id: "bbbbbbbbbbbb",
          pool: "p2",
          uri: "http://127.0.0.1/a/c/v/bbbbbbbbbbbb",
          state: "ONLINE",
        },
      ],
    },
    leaseId: null,
    createdAt: "2025-01-01T00:00:00.000Z",
    updatedAt: "2025-01-01T00:00:00.000Z",
    ...patch,
  };
}

async function rejection(p: Promise<unknown>): Promise<RegistryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof RegistryError))
    throw new Error(`expected a RegistryError, got ${String(err)}`);
  return err;
}

describe("conditional rows", () => {
  it("opening again keeps the tables and their rows", async () => {
    await insertRow(registry.nodes, { partitionKey: "keep", rowKey: "r", x: 1 });
    const again = await openRegistry(azurite.connectionString);
    expect((await readRow(again.nodes, "keep", "r"))?.value.x).toBe(1);
  });

  it("the loser of two updates from the same read sees a Conflict, and the winner's write stays", async () => {
    await insertRow(registry.volumes, { partitionKey: "race", rowKey: "r", n: 0 });
    const read = (await readRow(registry.volumes, "race", "r"))!;
    await replaceRow(registry.volumes, { partitionKey: "race", rowKey: "r", n: 1 }, read.etag);
    const err = await rejection(
      replaceRow(registry.volumes, { partitionKey: "race", rowKey: "r", n: 2 }, read.etag),
    );
    expect([err.code, err.table, err.partitionKey]).toEqual(["Conflict", "volumes", "race"]);
    expect((await readRow(registry.volumes, "race", "r"))?.value.n).toBe(1);
  });

  it("of two concurrent updates from the same read exactly one wins", async () => {
    await insertRow(registry.volumes, { partitionKey: "race2", rowKey: "r", n: 0 });
    const read = (await readRow(registry.volumes, "race2", "r"))!;
    const outcomes = await Promise.allSettled(
      [1, 2].map((n) =>
        replaceRow(registry.volumes, { partitionKey: "race2", rowKey: "r", n }, read.etag),
      ),
    );
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
    const lost = outcomes.find((o) => o.status === "rejected") as PromiseRejectedResult;
    expect((lost.reason as RegistryError).code).toBe("Conflict");
  });

  it("insert of a taken key is Exists and leaves the row alone", async () => {
    await insertRow(registry.pools, { partitionKey: "dup", rowKey: "r", v: "first" });
    expect(
      (
        await rejection(
          insertRow(registry.pools, { partitionKey: "dup", rowKey: "r", v: "second" }),
        )
      ).code,
    ).toBe("Exists");
    expect((await readRow(registry.pools, "dup", "r"))?.value.v).toBe("first");
  });

  it("delete with a stale ETag is Conflict; of a missing row, Missing", async () => {
    const first = await insertRow(registry.pools, { partitionKey: "del", rowKey: "r", v: 1 });
    const second = await replaceRow(
      registry.pools,
      { partitionKey: "del", rowKey: "r", v: 2 },
      first,
    );
    expect((await rejection(deleteRow(registry.pools, "del", "r", first))).code).toBe("Conflict");
    await deleteRow(registry.pools, "del", "r", second);
    expect(await readRow(registry.pools, "del", "r")).toBeUndefined();
    expect((await rejection(deleteRow(registry.pools, "del", "r", second))).code).toBe("Missing");
  });

  it("replace of a row deleted meanwhile is Missing", async () => {
    const etag = await insertRow(registry.pools, { partitionKey: "gone", rowKey: "r" });
    await deleteRow(registry.pools, "gone", "r", etag);
    expect(
      (await rejection(replaceRow(registry.pools, { partitionKey: "gone", rowKey: "r" }, etag)))
        .code,
    ).toBe("Missing");
  });
});

describe("retryOnConflict", () => {
  it("decides again on fresh data after losing, so no update is lost", async () => {
    await insertRow(registry.volumes, { partitionKey: "counter", rowKey: "r", n: 0 });
    const increment = () =>
      retryOnConflict(async () => {
        const read = (await readRow(registry.volumes, "counter", "r"))!;
        await replaceRow(
          registry.volumes,
          { partitionKey: "counter", rowKey: "r", n: (read.value.n as number) + 1 },
          read.etag,
        );
      }, 20);
    await Promise.all([increment(), increment(), increment(), increment()]);
    expect((await readRow(registry.volumes, "counter", "r"))?.value.n).toBe(4);
  });

  it("gives the Conflict up after the last attempt, and passes other errors at once", async () => {
    let calls = 0;
    const conflict = new RegistryError("Conflict", { table: "t", partitionKey: "p", rowKey: "r" });
    await expect(
      retryOnConflict(async () => {
        calls++;
        throw conflict;
      }, 3),
    ).rejects.toBe(conflict);
    expect(calls).toBe(3);
    calls = 0;
    const other = new Error("boom");
    await expect(
      retryOnConflict(async () => {
        calls++;
        throw other;
      }, 3),
    ).rejects.toBe(other);
    expect(calls).toBe(1);
  });
});

describe("records", () => {
  it("a volume round-trips, 8 TiB size and replica list included", async () => {
    const table = volumes(registry);
    const v = volume("round-trip");
    const etag = await table.insert(v);
    const read = await table.get("round-trip");
    expect(read).toEqual({ value: v, etag });
    const attached = volume("round-trip", {
      status: { ...v.status, state: "ATTACHED", ownerNode: "vm-1", epoch: 2 ** 40 },
      leaseId: "lease-1",
    });
    const next = await table.replace(attached, etag);
    expect(await table.get("round-trip")).toEqual({ value: attached, etag: next });
    expect((await table.list()).map((r) => r.value.name)).toContain("round-trip");
  });

  it("a row that is not a valid record fails on read instead of flowing on", async () => {
    await insertRow(registry.volumes, { partitionKey: "corrupt", rowKey: "volume", state: "HALF" });
    await expect(volumes(registry).get("corrupt")).rejects.toThrow();
  });

  it("a node round-trips with its nullable fields", async () => {
    const table = nodes(registry);
    const n = {
      name: "vm-1.internal",
      state: "READY" as const,
      cordoned: false,
      agentVersion: null,
      facts: { os: "linux", cpus: 2 },
      volumes: [{ volume: "v1", epoch: 3, state: "SERVING" as const, replicas: [] }],
      credentialSha256: "0".repeat(64),
      joinedAt: "2025-01-01T00:00:00.000Z",
      lastReportAt: null,
    };
    const etag = await table.insert(n);
    expect(await table.get("vm-1.internal")).toEqual({ value: n, etag });
    expect(await table.get("vm-2")).toBeUndefined();
  });
});

describe("fields", () => {
  it("Int64 keeps integers beyond 2^31 exact", () => {
    expect(fromInt64(BigInt(int64(8 * 2 ** 40).value))).toBe(8 * 2 ** 40);
    expect(() => int64(2 ** 53)).toThrow(RangeError);
  });

  it("refuses a JSON property the service would refuse", () => {
    expect(packJson("x", "a".repeat(MAX_STRING_PROPERTY_CHARS - 2))).toHaveLength(
      MAX_STRING_PROPERTY_CHARS,
    );
    expect(() => packJson("x", "a".repeat(MAX_STRING_PROPERTY_CHARS - 1))).toThrow(RangeError);
  });
});
