/**
 * A TokenCredential for Azurite's `--oauth basic`, standing in for Entra
 * ID: Azurite decodes the bearer JWT and checks that `aud` is a storage
 * audience, `iss` an Entra issuer, `nbf`/`iat`/`exp` present and now within
 * them, but not the signature (Azurite's TableTokenAuthenticator and
 * BlobTokenAuthenticator, `authenticateBasic`). `oid` and `tid` become the
 * user delegation key's `skoid`/`sktid`.
 */
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/identity";
import { createHmac, randomBytes, randomUUID } from "node:crypto";

const TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const LIFETIME_S = 60 * 60;

export interface TestIdentity extends TokenCredential {
  readonly objectId: string;
  /** The scopes of every token asked for, in order. */
  readonly requestedScopes: string[][];
}

export function testIdentity(): TestIdentity {
  const objectId = randomUUID();
  const requestedScopes: string[][] = [];
  // Azurite ignores the signature; signing anyway keeps the token a well-formed JWS.
  const secret = randomBytes(32);
  return {
    objectId,
    requestedScopes,
    async getToken(scopes: string | string[], _options?: GetTokenOptions): Promise<AccessToken> {
      requestedScopes.push(typeof scopes === "string" ? [scopes] : [...scopes]);
      const now = Math.floor(Date.now() / 1000);
      const claims = {
        aud: "https://storage.azure.com",
        iss: `https://sts.windows.net/${TENANT}/`,
        iat: now - 60,
        nbf: now - 60,
        exp: now + LIFETIME_S,
        oid: objectId,
        tid: TENANT,
      };
      const head = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
      const body = base64url(JSON.stringify(claims));
      const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
      return { token: `${head}.${body}.${sig}`, expiresOnTimestamp: (now + LIFETIME_S) * 1000 };
    },
  };
}

function base64url(text: string): string {
  return Buffer.from(text).toString("base64url");
}

/** An identity whose tokens expired an hour ago: Azurite must refuse them. */
export function expiredIdentity(): TokenCredential {
  const fresh = testIdentity();
  return {
    async getToken(scopes, options) {
      const { token } = (await fresh.getToken(scopes, options))!;
      const [head, body] = token.split(".");
      const claims = JSON.parse(Buffer.from(body!, "base64url").toString()) as Record<string, number>;
      const past = Math.floor(Date.now() / 1000) - 2 * 60 * 60;
      const stale = base64url(JSON.stringify({ ...claims, iat: past, nbf: past, exp: past + 3600 }));
      // The SDK would not send a token it knows is expired: tell it the token is good for a while.
      return { token: `${head}.${stale}.x`, expiresOnTimestamp: Date.now() + 60 * 60 * 1000 };
    },
  };
}
