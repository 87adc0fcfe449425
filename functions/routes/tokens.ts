/**
 * Join tokens: `/api/v1/tokens` (admin).
 */
import { z } from "zod";
import { IssuedToken, JoinTokenList, TokenCreate, TokenId } from "../../contract/token.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type Operation, operation } from "../http/operation.ts";
import { note } from "../lifecycle/note.ts";
import { issueJoinToken, listJoinTokens, revokeJoinToken } from "../registry/join-tokens.ts";

const ById = z.strictObject({ id: TokenId });

export function tokenOperations(cp: ControlPlane): Operation[] {
  return [
    operation({
      method: "post",
      path: "/tokens",
      operationId: "createToken",
      summary: "Create a join token; the token is in this response only",
      access: "admin",
      body: TokenCreate,
      success: { status: 201, description: "the token, secret included", schema: IssuedToken },
      handle: async ({ body }) => {
        const at = cp.now();
        const expiresAt = new Date(at.getTime() + body.expiresInSeconds * 1000);
        const issued = await issueJoinToken(cp.registry, at, expiresAt, body.description);
        await note(cp, {
          type: "token-created",
          message: `join token ${issued.id} created, valid until ${issued.expiresAt}`,
          data: { tokenId: issued.id },
        });
        return issued;
      },
    }),
    operation({
      method: "get",
      path: "/tokens",
      operationId: "listTokens",
      summary: "List join tokens (never their secrets), expired ones included until revoked",
      access: "admin",
      success: { status: 200, description: "every join token", schema: JoinTokenList },
      handle: async () => ({ items: await listJoinTokens(cp.registry) }),
    }),
    operation({
      method: "delete",
      path: "/tokens/:id",
      operationId: "revokeToken",
      summary: "Revoke a join token; nodes that joined with it keep their own credentials",
      access: "admin",
      params: ById,
      success: { status: 204, description: "revoked" },
      errors: ["TokenNotFound"],
      handle: async ({ params }) => {
        if (!(await revokeJoinToken(cp.registry, params.id)))
          throw new ApiError("TokenNotFound", `no join token ${params.id}`, { token: params.id });
        await note(cp, {
          type: "token-revoked",
          message: `join token ${params.id} revoked`,
          data: { tokenId: params.id },
        });
      },
    }),
  ];
}
