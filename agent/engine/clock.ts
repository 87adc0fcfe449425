/**
 * Time as the engine sees it. Layers that wait (throttle pause, retry
 * backoff) take a `Clock` so tests drive them with fake timers and never sleep.
 */

/** Wall time in milliseconds and one-shot timers. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * The process clock. The globals are looked up at call time, not captured,
 * so `vi.useFakeTimers()` installed after import still takes effect.
 */
export const SYSTEM_CLOCK: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
