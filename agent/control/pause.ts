/**
 * A wait that can be cut short: the loops sleep between requests on it, and
 * stop() (or a nudge) ends the sleep at once instead of a timer running out.
 */
export class Pause {
  #wake: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;

  /** Resolves after `ms`, or at the next `wake()`, whichever comes first. */
  wait(ms: number): Promise<void> {
    this.wake();
    return new Promise<void>((done) => {
      this.#wake = done;
      this.#timer = setTimeout(() => this.wake(), ms);
    });
  }

  /** End the current wait, if any. */
  wake(): void {
    clearTimeout(this.#timer);
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
