/**
 * Admin authentication: `Authorization: Bearer <admin key>`, checked
 * against the stored hash. Missing, malformed and wrong keys get the same
 * 401, so a client learns nothing about which it was.
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "./api-error.ts";

/** Resolves true when the presented key is a valid admin key. */
export type VerifyAdminKey = (presented: string) => Promise<boolean>;

const BEARER = /^Bearer +(\S+) *$/i;

export function adminAuth(verify: VerifyAdminKey): MiddlewareHandler {
  return async function adminAuth(c, next) {
    const presented = BEARER.exec(c.req.header("authorization") ?? "")?.[1];
    if (presented === undefined || !(await verify(presented))) {
      throw new ApiError(
        "Unauthorized",
        "a valid admin key is required (Authorization: Bearer <key>)",
      );
    }
    await next();
  };
}
