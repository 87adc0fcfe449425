/**
 * Abandoned attempts: requests that change a blob and ended without a
 * verdict (the connection was reset after the request went out, our own
 * timeout fired, the service answered a 5xx that does not say it did
 * nothing). The service may still be working on such an attempt and commit
 * it later, so a retry or a newer write to the same place could be
 * overtaken and undone by it. That is silent corruption, and the lease does
 * not stop it: the same writer sent both.
 *
 * Every request carries a server timeout of N seconds (`timeout=N`), and a
 * service that honours it never commits a request more than N seconds after
 * it received it. The latest moment the service can receive an abandoned
 * attempt is the moment we gave up on it: our socket is gone by then, so
 * only packets already on the wire can still arrive. So an abandoned
 * attempt can land no later than
 *
 *   given-up + N * (1 + clock-rate tolerance) + margin
 *
 * where the margin covers packets in flight and timer granularity, and the
 * tolerance covers the service's clock running slower than ours. Until then
 * the attempt is "in doubt": nothing that changes the same thing may be
 * sent. After it, the abandoned attempt has either landed or never will, and
 * whatever we send next lands after it.
 *
 * (Counting from when the request was sent would be shorter but unsound: a
 * lossy link can deliver the request itself seconds later, while the
 * service's clock starts only when it arrives.)
 *
 * One registry serves the whole process, keyed by blob (`doubtKey`), so a
 * second client of the same blob (a resync's fresh stack, a volume opened
 * again) waits too. A restarted process starts empty. Where the earlier
 * process held another lease, the service refuses its leftovers anyway. But
 * an agent restarted at the same epoch writes under the same lease as the
 * one that died, so when that one died writing, its attempts are taken to
 * be in doubt from the moment this process began (`inheritedDoubtMs`): it
 * died before that.
 *
 * Time is monotonic (`performance.now()`): a wall clock stepped forward
 * would end a doubt early.
 */

/**
 * What a change touches. An abandoned attempt can only put back what it
 * changes, so a later call waits only for abandoned attempts that touch the
 * same thing: page writes by byte range, metadata, the lease, and `blob`
 * (Put Blob) for all of them.
 */
export type Touches =
  | { kind: "pages"; start: number; end: number }
  | { kind: "metadata" }
  | { kind: "lease" }
  | { kind: "blob" };

/** Whether two changes touch the same thing. */
export function overlaps(a: Touches, b: Touches): boolean {
  if (a.kind === "blob" || b.kind === "blob") return true;
  if (a.kind !== b.kind) return false;
  if (a.kind === "pages" && b.kind === "pages") return a.start < b.end && b.start < a.end;
  return true;
}

interface Doubt {
  touches: Touches;
  /** When the abandoned attempt can no longer land, on the registry's clock. */
  until: number;
}

export class InDoubtWrites {
  readonly #now: () => number;
  readonly #byBlob = new Map<string, Doubt[]>();

  /** `now`: monotonic milliseconds. */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  now(): number {
    return this.#now();
  }

  /**
   * An attempt changing `touches` on `blob` was abandoned just now; it may
   * still land for `windowMs`.
   */
  abandon(blob: string, touches: Touches, windowMs: number): void {
    const until = this.#now() + windowMs;
    const doubts = this.#live(blob);
    doubts.push({ touches, until });
    this.#byBlob.set(blob, doubts);
  }

  /**
   * When the last abandoned attempt on `blob` that overlaps `touches` can no
   * longer land (registry clock), or undefined when none is in doubt.
   */
  settledAt(blob: string, touches: Touches): number | undefined {
    let latest: number | undefined;
    for (const d of this.#live(blob)) {
      if (overlaps(d.touches, touches) && (latest === undefined || d.until > latest)) latest = d.until;
    }
    return latest;
  }

  /** Attempts in doubt on `blob` now (for tests and metrics). */
  count(blob: string): number {
    return this.#live(blob).length;
  }

  /** The blob's doubts still open; forgets the rest. */
  #live(blob: string): Doubt[] {
    const doubts = this.#byBlob.get(blob);
    if (doubts === undefined) return [];
    const now = this.#now();
    const live = doubts.filter((d) => d.until > now);
    if (live.length === 0) this.#byBlob.delete(blob);
    else if (live.length !== doubts.length) this.#byBlob.set(blob, live);
    return live;
  }
}

/** The registry's key of a blob. */
export function doubtKey(location: { origin: string; path: string }): string {
  return `${location.origin}${location.path}`;
}

/**
 * How long, from now, attempts left by an earlier process may still land:
 * `doubtMs` counted from when this process began (`sinceStartMs` ago), since
 * the earlier one gave them up when it died, before that.
 */
export function inheritedDoubtMs(doubtMs: number, sinceStartMs: number = performance.now()): number {
  return Math.max(0, doubtMs - sinceStartMs);
}

/** The registry the agent uses: one per process, like the connection pools. */
export const sharedInDoubt = new InDoubtWrites();
