/**
 * How long the agent waits before it tries the control plane again: the
 * loop's own interval while it answers, then exponential backoff with jitter
 * while it does not, so that a fleet of agents coming back from an outage
 * does not knock all at once. Never faster than the interval.
 */

export interface BackoffPolicy {
  /** The normal period, and the floor of every delay. */
  intervalMs: number;
  /** The ceiling of the backoff. */
  maxMs: number;
}

/**
 * Delay before the next attempt after `failures` consecutive failures (0:
 * the last one succeeded). `random` gives [0, 1).
 */
export function nextDelay(
  failures: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  if (failures <= 0) return policy.intervalMs;
  const ceiling = Math.min(policy.maxMs, policy.intervalMs * 2 ** Math.min(failures, 16));
  // "Equal jitter": half fixed, half random, so the delay still grows with each failure.
  const delay = ceiling / 2 + (random() * ceiling) / 2;
  return Math.max(policy.intervalMs, Math.round(delay));
}
