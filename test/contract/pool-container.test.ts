/**
 * A pool's own container name leaves room for its replicas' containers
 * (`<container>-<replica id>`) and cannot pass for another pool's replica
 * container in the same account, which the reconciliation would then list
 * as that pool's.
 */
import { describe, expect, it } from "vitest";
import { PoolCreate } from "../../contract/pool.ts";
import { replicaContainerName } from "../../functions/storage/replica-container.ts";

const auth = { kind: "managedIdentity", accountUrl: "https://acct.blob.core.windows.net" };

describe("a pool's container name", () => {
  it("defaults to pagedisk, and its replicas' containers are named after it", () => {
    const pool = PoolCreate.parse({ name: "p1", auth });
    expect(pool.container).toBe("pagedisk");
    expect(replicaContainerName(pool.container, "0123456789ab")).toBe("pagedisk-0123456789ab");
  });

  it("takes up to 50 characters, so a replica's container is a valid name", () => {
    const longest = "c".repeat(50);
    expect(PoolCreate.safeParse({ name: "p1", container: longest, auth }).success).toBe(true);
    expect(replicaContainerName(longest, "0123456789ab")).toHaveLength(63);
    const refused = PoolCreate.safeParse({ name: "p1", container: "c".repeat(51), auth });
    expect(refused.error?.issues[0]?.message).toMatch(/at most 50 characters/);
  });

  it("refuses a name that is another pool's replica container", () => {
    const refused = PoolCreate.safeParse({ name: "p1", container: "pagedisk-0123456789ab", auth });
    expect(refused.error?.issues[0]?.message).toMatch(/12 hex digits/);
    expect(PoolCreate.safeParse({ name: "p1", container: "pagedisk-west", auth }).success).toBe(true);
  });
});
