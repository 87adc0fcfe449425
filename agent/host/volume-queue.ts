/**
 * One operation at a time per volume: a bind racing an unbind of the same
 * volume would otherwise tear down what the other just built. Operations on
 * different volumes run concurrently.
 */
export class VolumeQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  /** Run `task` after every earlier task of `volume` has settled. */
  run<T>(volume: string, task: () => Promise<T>): Promise<T> {
    const before = this.#tails.get(volume) ?? Promise.resolve();
    const result = before.then(task, task);
    const tail = result.catch(() => {});
    this.#tails.set(volume, tail);
    void tail.then(() => {
      if (this.#tails.get(volume) === tail) this.#tails.delete(volume);
    });
    return result;
  }

  /** Settles when every queued task has. */
  async idle(): Promise<void> {
    while (this.#tails.size > 0) await Promise.all(this.#tails.values());
  }
}
