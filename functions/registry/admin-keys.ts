/**
 * Admin API keys. A key is `pdk_<id>_<secret>`: the id (not secret) picks
 * the credentials row, which stores only the SHA-256 of the whole key
 * (see secrets.ts).
 */
import { randomBytes } from "node:crypto";
import { insertRow, readRow } from "./rows.ts";
import { matchesHash, newSecret, SECRET_PATTERN, sha256Hex } from "./secrets.ts";
import type { Registry } from "./tables.ts";

const PARTITION = "admin-key";
const KEY_FORMAT = new RegExp(`^pdk_([0-9a-f]{16})_${SECRET_PATTERN}$`);

/** A freshly issued key: shown once, never stored. */
export interface IssuedAdminKey {
  id: string;
  key: string;
}

/** Create an admin key and store its hash. */
export async function issueAdminKey(registry: Registry, at: Date): Promise<IssuedAdminKey> {
  const id = randomBytes(8).toString("hex");
  const key = `pdk_${id}_${newSecret()}`;
  await insertRow(registry.credentials, {
    partitionKey: PARTITION,
    rowKey: id,
    sha256: sha256Hex(key),
    createdAt: at.toISOString(),
  });
  return { id, key };
}

/** Whether `presented` is a stored admin key. */
export async function verifyAdminKey(registry: Registry, presented: string): Promise<boolean> {
  const m = KEY_FORMAT.exec(presented);
  if (!m) return false;
  const row = await readRow(registry.credentials, PARTITION, m[1]!);
  return matchesHash(row?.value.sha256, presented);
}

/**
 * Whether `presented` equals a key configured outside the registry (an app
 * setting in Azure). Hashing both sides first makes the comparison
 * constant-time whatever their lengths.
 */
export function matchesAdminKeySetting(setting: string, presented: string): boolean {
  return matchesHash(sha256Hex(setting), presented);
}
