/**
 * The in-flight byte budget that connections share: a bound on the memory
 * their requests make the server hold, whatever the clients do.
 *
 * A request is charged from the moment its header is accepted until the
 * last byte of its reply has been handed to the kernel: its write payload,
 * its read data, and a fixed overhead for its bookkeeping and reply header.
 * So replies a client never reads stay charged. A connection whose next
 * request cannot be charged is not read from until it can: TCP pushes back
 * on the client, which waits; no request fails for want of budget.
 *
 * Whether a connection may take `bytes` more is decided by two rules:
 *
 * - its own limit: what it holds plus `bytes` stays within its
 *   per-connection limit, unless it holds nothing (so a single request
 *   larger than that limit still runs, alone);
 * - fairness: once it has taken them, the budget left free is at least what
 *   this connection holds. One connection therefore holds at most half the
 *   budget, and each further one at most half of what is left: clients that
 *   never read their replies can drive the free budget down to about the
 *   size of their own requests, never to nothing, so another client with
 *   smaller requests is still served. (Its requests as large as theirs wait
 *   until the stuck bytes are released, when those clients read or leave.)
 *   When nothing at all is held, one request may use the whole budget.
 *
 * Waiting connections are woken, oldest first, whenever bytes are released,
 * and each tries again. Wake-ups run in a microtask, never inside the
 * release, so one connection's reply callback never re-enters another's
 * parsing.
 */

/** One connection's account with a budget. */
export class BudgetShare {
  readonly #budget: InflightBudget;
  /** Most bytes this connection may hold, unless it holds nothing. */
  readonly limit: number;
  #held = 0;
  #wake: (() => void) | undefined;

  /** @internal use `InflightBudget.share()` */
  constructor(budget: InflightBudget, limit: number) {
    this.#budget = budget;
    this.limit = limit;
  }

  /** Bytes this connection holds now. */
  get held(): number {
    return this.#held;
  }

  /** Whether `take(bytes)` would succeed now. */
  fits(bytes: number): boolean {
    if (this.#held > 0 && this.#held + bytes > this.limit) return false;
    return this.#budget.fits(this.#held, bytes);
  }

  /** Charge `bytes` if the rules allow it now; false (nothing charged) otherwise. */
  take(bytes: number): boolean {
    if (!this.fits(bytes)) return false;
    this.#held += bytes;
    this.#budget.charge(bytes);
    return true;
  }

  /**
   * Give back bytes taken earlier. Never more than this connection holds:
   * this runs in socket callbacks, where a throw would end the process.
   */
  give(bytes: number): void {
    const n = Math.min(bytes, this.#held);
    if (n <= 0) return;
    this.#held -= n;
    this.#budget.release(n);
  }

  /** Call `wake` once, after bytes are next released anywhere. Replaces an earlier wait. */
  wait(wake: () => void): void {
    this.#wake = wake;
    this.#budget.enqueue(this);
  }

  /** Stop waiting (the connection is ending); nothing held is given back. */
  cancel(): void {
    this.#wake = undefined;
    this.#budget.dequeue(this);
  }

  /** @internal called by the budget when it wakes this share. */
  fire(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** Counters of a budget, for status and tests. */
export interface BudgetStats {
  /** The budget, in bytes. */
  limit: number;
  /** Bytes charged now. */
  used: number;
  /** Most bytes charged at once since the budget was made. */
  peak: number;
  /** Connections waiting for budget now. */
  waiting: number;
}

/** A byte budget shared by the connections of one server, or of several. */
export class InflightBudget {
  readonly limit: number;
  #used = 0;
  #peak = 0;
  /** Shares waiting for bytes, oldest first (a Set keeps insertion order). */
  readonly #waiting = new Set<BudgetShare>();
  #wakeQueued = false;

  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit <= 0) {
      throw new RangeError(`in-flight budget must be a positive number of bytes, got ${limit}`);
    }
    this.limit = limit;
  }

  /** An account for one connection, with its own limit. */
  share(perConnectionLimit: number): BudgetShare {
    if (!Number.isSafeInteger(perConnectionLimit) || perConnectionLimit <= 0) {
      throw new RangeError(
        `per-connection in-flight limit must be a positive number of bytes, got ${perConnectionLimit}`,
      );
    }
    return new BudgetShare(this, perConnectionLimit);
  }

  get stats(): BudgetStats {
    return { limit: this.limit, used: this.#used, peak: this.#peak, waiting: this.#waiting.size };
  }

  /** @internal The fairness rule for a share holding `held` that asks for `bytes` more. */
  fits(held: number, bytes: number): boolean {
    const free = this.limit - this.#used;
    if (bytes > free) return false;
    if (this.#used === 0) return true;
    return held + bytes <= free - bytes;
  }

  /** @internal */
  charge(bytes: number): void {
    this.#used += bytes;
    if (this.#used > this.#peak) this.#peak = this.#used;
  }

  /** @internal */
  release(bytes: number): void {
    this.#used -= bytes;
    if (this.#waiting.size > 0 && !this.#wakeQueued) {
      this.#wakeQueued = true;
      queueMicrotask(this.#wakeAll);
    }
  }

  /** @internal */
  enqueue(share: BudgetShare): void {
    // Re-adding moves it to the back: a share that was woken and still did
    // not fit goes behind those that have not had their turn yet.
    this.#waiting.delete(share);
    this.#waiting.add(share);
  }

  /** @internal */
  dequeue(share: BudgetShare): void {
    this.#waiting.delete(share);
  }

  readonly #wakeAll = (): void => {
    this.#wakeQueued = false;
    const woken = [...this.#waiting];
    this.#waiting.clear();
    for (const share of woken) share.fire();
  };
}
