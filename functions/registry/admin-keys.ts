/**
 * Admin API keys. A key is `pdk_<id>_<secret>`: the id (not secret) picks
 * the credentials row, which stores only the SHA-256 of the whole key. A
 * plain hash is enough because keys are 256-bit random, not passwords; the
 * comparison is constant-time all the same.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { insertRow, readRow } from "./rows.ts";
import type { Registry } from "./tables.ts";

const PARTITION = "admin-key";
const KEY_FORMAT = /^pdk_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;

/** A freshly issued key: shown once, never stored. */
export interface IssuedAdminKey {
  id: string;
  key: string;
}

/** Create an admin key and store its hash. */
export async function issueAdminKey(registry: Registry, at: Date): Promise<IssuedAdminKey> {
  const id = randomBytes(8).toString("hex");
  const key = `pdk_${id}_${randomBytes(32).toString("base64url")}`;
  await insertRow(registry.credentials, {
    partitionKey: PARTITION,
    rowKey: id,
    sha256: sha256(key).toString("hex"),
    createdAt: at.toISOString(),
  });
  return { id, key };
}

/** Whether `presented` is a stored admin key. */
export async function verifyAdminKey(registry: Registry, presented: string): Promise<boolean> {
  const m = KEY_FORMAT.exec(presented);
  if (!m) return false;
  const row = await readRow(registry.credentials, PARTITION, m[1]!);
  const stored = row?.value.sha256;
  if (typeof stored !== "string") return false;
  const expected = Buffer.from(stored, "hex");
  const actual = sha256(presented);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
