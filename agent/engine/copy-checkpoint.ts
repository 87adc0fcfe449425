/**
 * How far a full copy (a rebuild, or a resync with no dirty log) got,
 * kept next to the dirty logs as `<replica>.<epoch>.copied`: every byte
 * of the copy's planned ranges below the offset it holds is on the target.
 *
 * It is trusted only where the target then took every write: a copy
 * stopped by the volume's close (the agent stopping cleanly) resumes from
 * it at the same epoch. A copy that failed (the target missed writes while
 * OFFLINE) drops it; after an unclean stop (writes in flight may be on the
 * source only) the caller does not trust it and the copy starts over.
 *
 * Writes are serialized and only the latest offset matters, so a copy
 * advancing faster than the file is written skips the stale ones.
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

/** The checkpoint of `replica`'s copy at `epoch`: read once, then saved as the copy goes. */
export class CopyCheckpoint {
  readonly #path: string;
  #next: number | undefined;
  #writing: Promise<void> = Promise.resolve();
  #running = false;

  constructor(dir: string, replica: string, epoch: number) {
    this.#path = join(dir, `${replica}.${epoch}.copied`);
  }

  /** The offset a copy may resume from: 0 when there is no checkpoint or it is unreadable. */
  async read(): Promise<number> {
    let text: string;
    try {
      text = await readFile(this.#path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return 0;
      throw err;
    }
    const offset = Number(text.trim());
    return Number.isSafeInteger(offset) && offset > 0 ? offset : 0;
  }

  /** Save `offset` (after the saves before it; a newer one overtakes those not yet written). */
  save(offset: number): void {
    this.#next = offset;
    if (this.#running) return;
    this.#running = true;
    this.#writing = this.#drain();
  }

  /** Resolves once the newest offset is on disk. */
  async flush(): Promise<void> {
    await this.#writing;
  }

  /** The copy is done, or its checkpoint no longer holds: no file. */
  async drop(): Promise<void> {
    this.#next = undefined;
    await this.#writing;
    await rm(this.#path, { force: true });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#next !== undefined) {
        const offset = this.#next;
        this.#next = undefined;
        await mkdir(dirname(this.#path), { recursive: true });
        await writeFile(this.#path, String(offset));
      }
    } finally {
      this.#running = false;
    }
  }
}
