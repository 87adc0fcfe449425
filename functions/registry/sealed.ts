/**
 * Secrets kept in the registry, sealed: envelope encryption with AES-256-GCM.
 * Each value gets a data key of its own; the data key is sealed with a
 * sealing key (sealing-keys.ts) that a reader of the registry does not
 * have. What is stored is one string:
 *
 *   v1.<key id>.<sealed data key>.<sealed value>
 *
 * where both sealed parts are base64url of iv (12 bytes) || ciphertext ||
 * tag (16 bytes). The key id says which sealing key opens it, so keys can
 * be rotated while older values stay readable. Both layers are bound to
 * `context` (what the value is and whose: `pools/<name>/connectionString`)
 * as additional data, so a sealed value copied into another row does not
 * open there.
 *
 * A value whose key is missing, or that does not open, is a
 * `SealedSecretError` that says what is missing; it never yields a wrong
 * secret.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import {
  openingKeys,
  PREVIOUS_SECRETS_KEYS_SETTING,
  SECRETS_KEY_SETTING,
  type SealingKeys,
} from "./sealing-keys.ts";

const VERSION = "v1";
const CIPHER = "aes-256-gcm";
const IV_BYTES = 12;
const TAG_BYTES = 16;
const SEALED = /^v1\.([0-9a-f]{16})\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/;

/**
 * `KeyMissing`: this process holds no key with the value's id (or none at
 * all). `Unreadable`: the value is not one this code wrote, or it does not
 * open with its key (altered, or moved from another row).
 */
export type SealedSecretProblem = "KeyMissing" | "Unreadable";

export class SealedSecretError extends Error {
  readonly problem: SealedSecretProblem;
  /** What the value is, as in the message: "pool p1's connection string". */
  readonly subject: string;
  /** The key id the value needs; undefined when it could not be read. */
  readonly keyId: string | undefined;

  constructor(
    problem: SealedSecretProblem,
    subject: string,
    keyId: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = "SealedSecretError";
    this.problem = problem;
    this.subject = subject;
    this.keyId = keyId;
  }
}

/**
 * `plaintext` sealed under the current key of `keys`. With no keys it
 * throws rather than keep the secret in the clear.
 */
export function seal(
  plaintext: string,
  context: string,
  keys: SealingKeys | undefined,
  subject: string,
): string {
  if (!keys) {
    throw new SealedSecretError(
      "KeyMissing",
      subject,
      undefined,
      `${subject} cannot be stored: this control plane has no sealing key, and secrets are never stored in the clear (set ${SECRETS_KEY_SETTING} to 32 random bytes in base64)`,
    );
  }
  const aad = additionalData(context);
  const dataKey = randomBytes(32);
  try {
    const sealedKey = encrypt(keys.current.key, dataKey, aad);
    const sealedValue = encrypt(dataKey, Buffer.from(plaintext, "utf8"), aad);
    return [VERSION, keys.current.id, sealedKey, sealedValue].join(".");
  } finally {
    dataKey.fill(0);
  }
}

/** The plaintext of `sealed`, a value `seal` made with the same `context`. */
export function unseal(
  sealed: string,
  context: string,
  keys: SealingKeys | undefined,
  subject: string,
): string {
  const parts = SEALED.exec(sealed);
  if (!parts) {
    throw new SealedSecretError(
      "Unreadable",
      subject,
      undefined,
      `${subject} is not a value this control plane sealed (expected ${VERSION}.<key id>.<key>.<value>)`,
    );
  }
  const [, id, sealedKey, sealedValue] = parts as unknown as [string, string, string, string];
  const key = openingKeys(keys).find((k) => k.id === id);
  if (!key) throw keyMissing(subject, id, keys);
  const aad = additionalData(context);
  let dataKey: Buffer | undefined;
  try {
    dataKey = decrypt(key.key, sealedKey, aad);
    return decrypt(dataKey, sealedValue, aad).toString("utf8");
  } catch {
    throw new SealedSecretError(
      "Unreadable",
      subject,
      id,
      `${subject} does not open with key ${id}: the stored value was altered, or copied from another record`,
    );
  } finally {
    dataKey?.fill(0);
  }
}

/** The id of the key a sealed value needs; undefined when it is not one. */
export function sealedKeyId(sealed: string): string | undefined {
  return SEALED.exec(sealed)?.[1];
}

function keyMissing(subject: string, id: string, keys: SealingKeys | undefined): SealedSecretError {
  const held = keys
    ? `it holds key ${keys.current.id}${keys.previous.length > 0 ? ` and previous ${keys.previous.map((k) => k.id).join(", ")}` : ""}`
    : "it holds no sealing key";
  return new SealedSecretError(
    "KeyMissing",
    subject,
    id,
    `${subject} is sealed with key ${id}, which this control plane does not have (${held}): set ${SECRETS_KEY_SETTING}, or ${PREVIOUS_SECRETS_KEYS_SETTING} while it is re-sealed, to the key it was sealed with`,
  );
}

function additionalData(context: string): Buffer {
  return Buffer.from(`pagedisk ${VERSION} ${context}`, "utf8");
}

function encrypt(key: Buffer, plaintext: Buffer, aad: Buffer): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(CIPHER, key, iv).setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, body, cipher.getAuthTag()]).toString("base64url");
}

function decrypt(key: Buffer, sealed: string, aad: Buffer): Buffer {
  const bytes = Buffer.from(sealed, "base64url");
  if (bytes.length < IV_BYTES + TAG_BYTES) throw new Error("too short");
  const iv = bytes.subarray(0, IV_BYTES);
  const tag = bytes.subarray(bytes.length - TAG_BYTES);
  const decipher = createDecipheriv(CIPHER, key, iv, { authTagLength: TAG_BYTES }).setAAD(aad);
  decipher.setAuthTag(tag);
  const body = bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES);
  return Buffer.concat([decipher.update(body), decipher.final()]);
}
