/**
 * The keys that seal secrets kept in the registry (sealed.ts): the current
 * one, which seals every write, and previous ones, which only open what they
 * sealed until a start re-seals it under the current one (pools.ts,
 * `sealPoolRows`). A reader of the registry does not hold them: they come
 * from app settings (in Azure possibly Key Vault references, which App
 * Service resolves into the setting), or locally from a key file beside the
 * rest of the state.
 *
 * Each key is known by an id derived from it, stored with every sealed
 * value, so that a row says which key it needs and rotation is a matter of
 * settings: the new key in `PAGEDISK_SECRETS_KEY`, the old one in
 * `PAGEDISK_SECRETS_KEY_PREVIOUS`.
 *
 * One set per process, like the pool identity (storage/pool-identity.ts):
 * hosts install it with `useSealingKeys` before the registry is read.
 */
import { createHmac, randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface SealingKey {
  /** 16 hex digits derived from the key; says which key a sealed value needs, reveals nothing of it. */
  readonly id: string;
  /** 32 bytes: an AES-256 key. */
  readonly key: Buffer;
}

export interface SealingKeys {
  /** Seals every write. */
  readonly current: SealingKey;
  /** Open what they sealed, and nothing is sealed with them any more. */
  readonly previous: readonly SealingKey[];
}

/** The settings that hold the keys (settings.ts reads them through `sealingKeysFrom`). */
export const SECRETS_KEY_SETTING = "PAGEDISK_SECRETS_KEY";
export const PREVIOUS_SECRETS_KEYS_SETTING = "PAGEDISK_SECRETS_KEY_PREVIOUS";

const KEY_BYTES = 32;
/** 32 bytes in base64 or base64url, padded or not. */
const KEY_TEXT = /^[A-Za-z0-9+/_-]{43}=?$/;

/** The key given as `text` (32 bytes, base64); `name` is the setting it came from, for the error. */
export function sealingKey(name: string, text: string): SealingKey {
  const trimmed = text.trim();
  if (trimmed.startsWith("@Microsoft.KeyVault(")) {
    // App Service leaves a reference it could not resolve in place, as text.
    throw new Error(
      `${name} is a Key Vault reference that App Service did not resolve: give the Function App's identity read access to the secret (the Key Vault Secrets User role) and check the reference's vault and secret name`,
    );
  }
  const key = KEY_TEXT.test(trimmed) ? Buffer.from(trimmed, "base64") : undefined;
  if (key?.length !== KEY_BYTES) {
    throw new Error(
      `${name} must be ${KEY_BYTES} random bytes in base64 (openssl rand -base64 32), got ${trimmed.length} characters that are not`,
    );
  }
  return { id: keyId(key), key };
}

/**
 * The keys named by `PAGEDISK_SECRETS_KEY` and `PAGEDISK_SECRETS_KEY_PREVIOUS`
 * (comma-separated); undefined when neither is set.
 */
export function sealingKeysFrom(env: Record<string, string | undefined>): SealingKeys | undefined {
  const current = env[SECRETS_KEY_SETTING]?.trim();
  const previous = (env[PREVIOUS_SECRETS_KEYS_SETTING] ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter((k) => k !== "");
  if (!current) {
    if (previous.length > 0) {
      throw new Error(
        `${PREVIOUS_SECRETS_KEYS_SETTING} is set but ${SECRETS_KEY_SETTING} is not: previous keys only open what they sealed, and the current key seals it again`,
      );
    }
    return undefined;
  }
  return {
    current: sealingKey(SECRETS_KEY_SETTING, current),
    previous: previous.map((k) => sealingKey(PREVIOUS_SECRETS_KEYS_SETTING, k)),
  };
}

/** A fresh key, as its setting's text (base64). */
export function newSealingKeyText(): string {
  return randomBytes(KEY_BYTES).toString("base64");
}

/** Current and previous keys, current first: what may open a sealed value. */
export function openingKeys(keys: SealingKeys | undefined): readonly SealingKey[] {
  return keys ? [keys.current, ...keys.previous] : [];
}

let installed: SealingKeys | undefined;

/** Seal and open with `keys` from now on; undefined means this process holds none. */
export function useSealingKeys(keys: SealingKeys | undefined): void {
  installed = keys;
}

/** The keys installed, if any. */
export function sealingKeys(): SealingKeys | undefined {
  return installed;
}

/** The local stack's key file, in its state directory. */
const LOCAL_KEY_FILE = "secrets.key";

/**
 * What the local stack (functions/local.ts) sets unless `env` does: pools
 * with account keys allowed (Azurite has no identity, only its well-known
 * key), and a sealing key of its own, kept in `<stateDir>/secrets.key`.
 */
export async function localSealingSettings(
  env: Record<string, string | undefined>,
  stateDir: string,
): Promise<Record<string, string>> {
  const settings: Record<string, string> = {};
  if (!env.PAGEDISK_POOL_ACCOUNT_KEYS) settings.PAGEDISK_POOL_ACCOUNT_KEYS = "allow";
  if (!env[SECRETS_KEY_SETTING]) {
    // Made owner-only when made here; an existing directory is the caller's to keep.
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    settings[SECRETS_KEY_SETTING] = await localSealingKeyText(join(stateDir, LOCAL_KEY_FILE));
  }
  return settings;
}

/**
 * The local stack's key: the text of `file` if it exists, else a new key
 * written there, readable by its owner only. Losing the file makes every
 * pool sealed with it unreadable, as losing the setting would in Azure.
 */
async function localSealingKeyText(file: string): Promise<string> {
  try {
    const text = (await readFile(file, "utf8")).trim();
    // An older or hand-made file may be laxer than the one written below.
    await chmod(file, 0o600);
    return text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const text = newSealingKeyText();
  // `wx`: two starts racing to make the file keep the first key, not two.
  try {
    await writeFile(file, `${text}\n`, { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return localSealingKeyText(file);
    throw err;
  }
  return text;
}

function keyId(key: Buffer): string {
  return createHmac("sha256", key).update("pagedisk sealing key id").digest("hex").slice(0, 16);
}
