/**
 * Join tokens: what an admin hands to a new VM so that its agent can join.
 * A token may be used by many VMs until it expires or is revoked.
 */
import { z } from "zod";
import { Timestamp } from "./names.ts";

/** Longest a join token may live: a week. */
export const MAX_TOKEN_TTL_SECONDS = 7 * 86_400;

/** The token's public id (the part of the token that is not secret). */
export const TokenId = z.string().regex(/^[0-9a-f]{16}$/, { error: "token id is 16 hex digits" });

/** `POST /api/v1/tokens` */
export const TokenCreate = z.strictObject({
  /** Lifetime in seconds; one day unless given. */
  expiresInSeconds: z.int().min(60).max(MAX_TOKEN_TTL_SECONDS).default(86_400),
  description: z.string().max(256).optional(),
});
export type TokenCreate = z.infer<typeof TokenCreate>;

/** A token as listed: never the secret. */
export const JoinToken = z.object({
  id: TokenId,
  description: z.string().nullable(),
  createdAt: Timestamp,
  expiresAt: Timestamp,
});
export type JoinToken = z.infer<typeof JoinToken>;

/** A token just created, with its secret: shown this once, kept only as a hash. */
export const IssuedToken = JoinToken.extend({
  /** `pdj_<id>_<secret>`; the agent sends it as `Authorization: Bearer` to join. */
  token: z.string(),
});
export type IssuedToken = z.infer<typeof IssuedToken>;

export const JoinTokenList = z.object({ items: z.array(JoinToken) });
export type JoinTokenList = z.infer<typeof JoinTokenList>;
