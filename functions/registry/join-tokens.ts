/**
 * Join tokens, in the credentials table (PartitionKey `join-token`, RowKey
 * the token id). A token is `pdj_<id>_<secret>`; only the SHA-256 of the
 * whole token is stored. Revoking deletes the row.
 */
import { randomBytes } from "node:crypto";
import { odata } from "@azure/data-tables";
import type { IssuedToken, JoinToken } from "../../contract/token.ts";
import { deleteRow, insertRow, listRows, readRow } from "./rows.ts";
import { matchesHash, newSecret, SECRET_PATTERN, sha256Hex } from "./secrets.ts";
import type { Registry } from "./tables.ts";

const PARTITION = "join-token";
const TOKEN_FORMAT = new RegExp(`^pdj_([0-9a-f]{16})_${SECRET_PATTERN}$`);

/** Whether `presented` has the shape of a join token (not whether it is valid). */
export function isJoinTokenFormat(presented: string): boolean {
  return TOKEN_FORMAT.test(presented);
}

/** Create a token valid until `expiresAt` and store its hash. */
export async function issueJoinToken(
  registry: Registry,
  at: Date,
  expiresAt: Date,
  description: string | undefined,
): Promise<IssuedToken> {
  const id = randomBytes(8).toString("hex");
  const token = `pdj_${id}_${newSecret()}`;
  const listed: JoinToken = {
    id,
    description: description ?? null,
    createdAt: at.toISOString(),
    expiresAt: expiresAt.toISOString(),
  };
  await insertRow(registry.credentials, {
    partitionKey: PARTITION,
    rowKey: id,
    sha256: sha256Hex(token),
    createdAt: listed.createdAt,
    expiresAt: listed.expiresAt,
    ...(description === undefined ? {} : { description }),
  });
  return { ...listed, token };
}

/** Every token not yet revoked, expired ones included (they are listed until revoked). */
export async function listJoinTokens(registry: Registry): Promise<JoinToken[]> {
  const rows = await listRows(registry.credentials, odata`PartitionKey eq ${PARTITION}`);
  return rows.map(({ value }) => ({
    id: String(value.rowKey),
    description: typeof value.description === "string" ? value.description : null,
    createdAt: String(value.createdAt),
    expiresAt: String(value.expiresAt),
  }));
}

/** Revoke a token; false when there was none of that id. */
export async function revokeJoinToken(registry: Registry, id: string): Promise<boolean> {
  const row = await readRow(registry.credentials, PARTITION, id);
  if (!row) return false;
  try {
    await deleteRow(registry.credentials, PARTITION, id, row.etag);
  } catch {
    // Revoked concurrently, or changed: either way, check again.
    return (await readRow(registry.credentials, PARTITION, id)) === undefined;
  }
  return true;
}

/** The token's id if `presented` is a stored token that has not expired at `now`. */
export async function verifyJoinToken(
  registry: Registry,
  presented: string,
  now: Date,
): Promise<string | undefined> {
  const id = TOKEN_FORMAT.exec(presented)?.[1];
  if (id === undefined) return undefined;
  const row = await readRow(registry.credentials, PARTITION, id);
  if (!row || !matchesHash(row.value.sha256, presented)) return undefined;
  const expiresAt = Date.parse(String(row.value.expiresAt));
  return now.getTime() < expiresAt ? id : undefined;
}
