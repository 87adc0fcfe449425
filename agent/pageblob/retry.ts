/**
 * Request-level retry policy, pure and in the shape of undici's RetryHandler
 * and Azure's storage retry policy: `shouldRetry()` decides, `calculateDelay()`
 * says how long to wait. Randomness is injected so tests are deterministic.
 *
 * Only `Transient` errors are retried here (every page blob operation we send
 * is idempotent). `Throttled` surfaces at once: pausing the whole volume is
 * the engine's job, and retrying single requests underneath it would only
 * add load to an account that already asked us to back off. So does a page
 * write whose attempt was left in doubt (transport.ts): the engine retries
 * it once the abandoned attempt can no longer land.
 */
import { isStorageError } from "./errors.ts";

export interface RetryOptions {
  /** Total attempts including the first; 1 disables retry. */
  maxAttempts: number;
  /** Delay before the first retry, in ms. */
  minDelayMs: number;
  /** Upper bound of any delay, in ms (also caps a server's Retry-After). */
  maxDelayMs: number;
  /** Growth of the delay per attempt. */
  factor: number;
  /** Fraction of the delay that is randomised, 0 (none) to 1 (full jitter). */
  jitter: number;
}

/** A few quick retries: a reset keep-alive socket or a brief 500 should not reach the engine. */
export const DEFAULT_RETRY: Readonly<RetryOptions> = {
  maxAttempts: 4,
  minDelayMs: 50,
  maxDelayMs: 2_000,
  factor: 4,
  jitter: 0.5,
};

/**
 * Whether a request that failed with `err` on attempt number `attempt`
 * (1-based) should be sent again.
 */
export function shouldRetry(
  err: unknown,
  attempt: number,
  opts: Pick<RetryOptions, "maxAttempts"> = DEFAULT_RETRY,
): boolean {
  return isStorageError(err) && err.code === "Transient" && attempt < opts.maxAttempts;
}

/**
 * Delay before retry number `attempt` (1 = the first retry). Exponential from
 * `minDelayMs` by `factor`, capped at `maxDelayMs`, with the `jitter` part of
 * it drawn from `random()`. A server's Retry-After wins over the backoff (it
 * knows better) but is still capped, as undici does.
 */
export function calculateDelay(
  attempt: number,
  opts: Omit<RetryOptions, "maxAttempts"> = DEFAULT_RETRY,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number {
  if (retryAfterMs !== undefined && retryAfterMs >= 0) {
    return Math.min(retryAfterMs, opts.maxDelayMs);
  }
  const exp = opts.minDelayMs * opts.factor ** Math.max(0, attempt - 1);
  const base = Math.min(exp, opts.maxDelayMs);
  const jitter = Math.min(1, Math.max(0, opts.jitter));
  return Math.round(base * (1 - jitter) + base * jitter * random());
}
