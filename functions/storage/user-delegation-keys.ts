/**
 * User delegation keys, one per pool account, cached. A managed-identity
 * pool has no account key, so agents' SAS tokens are signed with a key the
 * account hands to the control plane's identity (Get User Delegation Key).
 * Asking for one per SAS would cost a round trip per replica per desired
 * state; instead a key is kept for hours and renewed when less remains
 * than a SAS signed now could need.
 *
 * Concurrency: callers for the same account share one request in flight; a
 * failed request is shared by those waiting on it and forgotten, so the
 * next caller asks again.
 */
import type { UserDelegationKey } from "@azure/storage-blob";

/** A key is asked for this long (the service allows up to 7 days). */
export const DELEGATION_KEY_LIFETIME_MS = 6 * 60 * 60 * 1000;
/** Signed as valid from a little before now, so that a storage clock behind ours does not refuse it. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;

/** Asks the account for a key valid from `startsOn` to `expiresOn`. */
export type FetchDelegationKey = (startsOn: Date, expiresOn: Date) => Promise<UserDelegationKey>;

export interface DelegationKeyPolicy {
  /** How long a new key is asked for. */
  lifetimeMs?: number;
  /**
   * A cached key with less than this left is renewed: the longest SAS it
   * signs plus a margin, since a SAS must not outlive its key.
   */
  renewBeforeMs: number;
}

export class UserDelegationKeys {
  readonly #keys = new Map<string, Promise<UserDelegationKey>>();
  readonly #lifetimeMs: number;
  readonly #renewBeforeMs: number;

  constructor(policy: DelegationKeyPolicy) {
    this.#lifetimeMs = policy.lifetimeMs ?? DELEGATION_KEY_LIFETIME_MS;
    this.#renewBeforeMs = policy.renewBeforeMs;
    if (this.#renewBeforeMs >= this.#lifetimeMs)
      throw new RangeError("a delegation key must outlive the time kept before its renewal");
  }

  /** A key for `account` valid at least `renewBeforeMs` past `now`; `fetch` is called only when none is. */
  async get(account: string, now: Date, fetch: FetchDelegationKey): Promise<UserDelegationKey> {
    const held = this.#keys.get(account);
    if (held) {
      const key = await held;
      if (key.signedExpiresOn.getTime() - now.getTime() > this.#renewBeforeMs) return key;
      // Someone else may have started the renewal while we waited: share theirs.
      if (this.#keys.get(account) !== held) return this.get(account, now, fetch);
    }
    const asked = fetch(
      new Date(now.getTime() - CLOCK_SKEW_MS),
      new Date(now.getTime() + this.#lifetimeMs),
    );
    this.#keys.set(account, asked);
    asked.catch(() => {
      if (this.#keys.get(account) === asked) this.#keys.delete(account);
    });
    return asked;
  }
}
