import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueAdminKey, verifyAdminKey } from "../../../functions/registry/admin-keys.ts";
import { listRows } from "../../../functions/registry/rows.ts";
import { openRegistry, type Registry } from "../../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";

let azurite: Azurite;
let registry: Registry;
beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  registry = await openRegistry(azurite.connectionString);
});
afterAll(() => azurite?.dispose());

describe("admin keys", () => {
  it("verifies an issued key and stores only its hash", async () => {
    const { id, key } = await issueAdminKey(registry, new Date());
    expect(key).toMatch(/^pdk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(await verifyAdminKey(registry, key)).toBe(true);
    const stored = JSON.stringify(await listRows(registry.credentials));
    expect(stored).toContain(id);
    expect(stored).not.toContain(key.slice(`pdk_${id}_`.length));
  });

  it("refuses a changed secret, an unknown id and anything malformed", async () => {
    const { id, key } = await issueAdminKey(registry, new Date());
    const secret = key.slice(`pdk_${id}_`.length);
    const flipped = `pdk_${id}_${secret[0] === "A" ? "B" : "A"}${secret.slice(1)}`;
    expect(await verifyAdminKey(registry, flipped)).toBe(false);
    expect(await verifyAdminKey(registry, `pdk_${"0".repeat(16)}_${secret}`)).toBe(false);
    for (const bad of ["", key.slice(0, -1), `${key}x`, key.toUpperCase(), secret]) {
      expect(await verifyAdminKey(registry, bad)).toBe(false);
    }
  });
});
