/**
 * Who is calling, and may they. Every credential travels as
 * `Authorization: Bearer <credential>` and says by its prefix what it is:
 * `pdk_` an admin key, `pdn_` a node credential, `pdj_` a join token.
 *
 * - No credential, or one that does not verify (unknown, wrong secret,
 *   expired token): 401, the same for all, so a client learns nothing about
 *   which it was.
 * - A valid credential of the wrong kind, or a node's credential on another
 *   node's endpoint: 403.
 *
 * Authentication runs before any input is read, and only reads.
 *
 * Calls that change something are rate limited per credential
 * (rate-limit.ts): over the rate, 429 with `Retry-After`, and nothing done.
 */
import type { Context, MiddlewareHandler } from "hono";
import { isJoinTokenFormat, verifyJoinToken } from "../registry/join-tokens.ts";
import { claimedNode } from "../registry/node-credentials.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import type { Read } from "../registry/rows.ts";
import { matchesHash } from "../registry/secrets.ts";
import type { Registry } from "../registry/tables.ts";
import { ApiError } from "./api-error.ts";
import type { Access } from "./operation.ts";
import { type CallerLimits, isLimited } from "./rate-limit.ts";

/** Resolves true when the presented key is a valid admin key. */
export type VerifyAdminKey = (presented: string) => Promise<boolean>;

/** A verified caller. A node comes with its row as read, so its own endpoints need not read it again. */
export type Caller =
  | { kind: "admin" }
  | { kind: "node"; node: Read<NodeRecord> }
  | { kind: "join"; tokenId: string };

/** Where the guard leaves the caller for the handler (see `callerOf`). */
const CALLER = "pagedisk.caller";

const BEARER = /^Bearer +(\S+) *$/i;

export interface Authenticator {
  registry: Registry;
  now: () => Date;
  verifyAdminKey: VerifyAdminKey;
  /** Rate limits on calls that change something; none when absent. */
  limits?: CallerLimits;
}

/** The caller a credential proves, or undefined when it proves nothing. */
export async function identify(
  auth: Authenticator,
  presented: string,
): Promise<Caller | undefined> {
  if (presented.startsWith("pdk_")) {
    return (await auth.verifyAdminKey(presented)) ? { kind: "admin" } : undefined;
  }
  const node = claimedNode(presented);
  if (node !== undefined) {
    const read = await nodes(auth.registry).get(node);
    return read && matchesHash(read.value.credentialSha256, presented)
      ? { kind: "node", node: read }
      : undefined;
  }
  if (isJoinTokenFormat(presented)) {
    const tokenId = await verifyJoinToken(auth.registry, presented, auth.now());
    return tokenId === undefined ? undefined : { kind: "join", tokenId };
  }
  // An admin key set as an app setting may have any shape.
  return (await auth.verifyAdminKey(presented)) ? { kind: "admin" } : undefined;
}

/** Middleware admitting only callers allowed `access`; node endpoints take the node from `:name`. */
export function guard(access: Exclude<Access, "public">, auth: Authenticator): MiddlewareHandler {
  return async function guardAccess(c, next) {
    const presented = BEARER.exec(c.req.header("authorization") ?? "")?.[1];
    const limits = isLimited(c.req.method) ? auth.limits : undefined;
    // Over its rate already: refused before the credential is checked, so a flood reads nothing.
    // Only a verified call spends a bucket (below), so this refuses no one but the spender.
    if (limits && presented !== undefined) refuseOverRate(limits.waitFor(presented));
    const caller = presented === undefined ? undefined : await identify(auth, presented);
    if (!caller) {
      throw new ApiError(
        "Unauthorized",
        `${WANTED[access]} is required (Authorization: Bearer <credential>)`,
      );
    }
    // Spent before the checks below, so that a node flooding others' endpoints is limited too.
    if (limits && presented !== undefined) {
      refuseOverRate(limits.take(caller.kind === "node" ? "node" : "key", presented));
    }
    if (caller.kind !== access) {
      throw new ApiError(
        "Forbidden",
        `this endpoint needs ${WANTED[access]}, not ${WANTED[caller.kind]}`,
      );
    }
    if (caller.kind === "node" && caller.node.value.name !== c.req.param("name")) {
      throw new ApiError("Forbidden", "a node may act only for itself");
    }
    c.set(CALLER, caller);
    await next();
  };
}

/** `TooManyRequests` when `waitMs` is more than 0; `details.retryAfterSeconds` becomes `Retry-After`. */
function refuseOverRate(waitMs: number): void {
  if (waitMs <= 0) return;
  const retryAfterSeconds = Math.max(1, Math.ceil(waitMs / 1000));
  throw new ApiError(
    "TooManyRequests",
    `too many changes from this credential; retry after ${retryAfterSeconds} s`,
    { retryAfterSeconds },
  );
}

const WANTED: Record<Caller["kind"], string> = {
  admin: "an admin key",
  node: "the node's own credential",
  join: "a valid join token",
};

/** The caller the guard admitted. Only for operations that have a guard. */
export function callerOf(c: Context): Caller {
  const caller = c.get(CALLER) as Caller | undefined;
  if (!caller) throw new Error("callerOf on an unguarded route");
  return caller;
}
