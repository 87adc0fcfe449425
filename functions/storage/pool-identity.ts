/**
 * The control plane's own Entra ID identity, as seen by managed-identity
 * pools: the token credential that reaches their blobs, and the cache of
 * user delegation keys it obtains to sign agents' SAS tokens.
 *
 * One per process, like the identity itself: in Azure the Function App's
 * managed identity through `DefaultAzureCredential` (made on first use);
 * hosts and tests that have another credential install it with
 * `usePoolIdentity` before the first pool call.
 */
import { DefaultAzureCredential, type TokenCredential } from "@azure/identity";
import { UserDelegationKeys } from "./user-delegation-keys.ts";

/** The longest SAS a delegation key signs (replica-sas.ts) plus a margin for slow callers. */
export const DELEGATION_KEY_RENEW_BEFORE_MS = 15 * 60 * 1000 + 15 * 60 * 1000;

export interface PoolIdentity {
  readonly credential: TokenCredential;
  readonly delegationKeys: UserDelegationKeys;
}

let current: PoolIdentity | undefined;

/** Use `credential` from now on, with an empty key cache (keys belong to the identity that got them). */
export function usePoolIdentity(credential: TokenCredential): PoolIdentity {
  current = {
    credential,
    delegationKeys: new UserDelegationKeys({ renewBeforeMs: DELEGATION_KEY_RENEW_BEFORE_MS }),
  };
  return current;
}

/** The identity in use; `DefaultAzureCredential` unless another was installed. */
export function poolIdentity(): PoolIdentity {
  return current ?? usePoolIdentity(new DefaultAzureCredential());
}
