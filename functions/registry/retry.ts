/**
 * Optimistic concurrency: read, decide, write conditionally; when another
 * writer got there first, decide again on fresh data.
 */
import { isRegistryError } from "./registry-error.ts";

/** Attempts before a `RegistryError("Conflict")` is given up to the caller. */
export const CONFLICT_ATTEMPTS = 5;

/**
 * Run `attempt` until it finishes without a `Conflict`, at most `attempts`
 * times. `attempt` must read what it decides on inside itself, so each retry
 * sees the write that beat it. Other errors pass through at once.
 */
export async function retryOnConflict<T>(
  attempt: () => Promise<T>,
  attempts = CONFLICT_ATTEMPTS,
): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (i >= attempts || !isRegistryError(err, "Conflict")) throw err;
    }
  }
}
