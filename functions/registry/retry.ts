/**
 * Optimistic concurrency: read, decide, write conditionally; when another
 * writer got there first, decide again on fresh data.
 */
import { isRegistryError } from "./registry-error.ts";

/** Attempts before a `RegistryError("Conflict")` is given up to the caller. */
export const CONFLICT_ATTEMPTS = 10;
/** Upper bound of the random pause before retry n is n times this. */
const BACKOFF_STEP_MS = 10;

/**
 * Run `attempt` until it finishes without a `Conflict`, at most `attempts`
 * times. `attempt` must read what it decides on inside itself, so each retry
 * sees the write that beat it. Other errors pass through at once.
 *
 * Losers wait a random, growing moment before retrying: without it, writers
 * that collided once re-read together and collide again, and with several
 * of them one can lose every round.
 */
export async function retryOnConflict<T>(
  attempt: () => Promise<T>,
  attempts = CONFLICT_ATTEMPTS,
  random: () => number = Math.random,
): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (i >= attempts || !isRegistryError(err, "Conflict")) throw err;
    }
    await new Promise((r) => setTimeout(r, random() * BACKOFF_STEP_MS * i));
  }
}
