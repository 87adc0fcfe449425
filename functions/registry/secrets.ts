/**
 * Secrets the control plane hands out (admin keys, join tokens, node
 * credentials): 256 random bits, shown once, stored as SHA-256. A plain hash
 * is enough because they are random, not passwords; comparisons are
 * constant-time all the same. Secrets it is given and must use again (pool
 * connection strings) cannot be hashed: they are sealed (sealed.ts).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** 32 random bytes as base64url: 43 characters of `[A-Za-z0-9_-]`. */
export function newSecret(): string {
  return randomBytes(32).toString("base64url");
}

/** Pattern of `newSecret()`'s output, for credential formats. */
export const SECRET_PATTERN = "[A-Za-z0-9_-]{43}";

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Whether `presented` hashes to `storedHex`, in constant time. */
export function matchesHash(storedHex: unknown, presented: string): boolean {
  if (typeof storedHex !== "string") return false;
  const expected = Buffer.from(storedHex, "hex");
  const actual = createHash("sha256").update(presented).digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
