/**
 * Reconcile: make what this node serves match its desired state.
 *
 * - desired, not served             -> attach (or refuse: reported FAILED)
 * - served, epoch or lease changed  -> detach, then attach the new attachment
 * - served, same attachment         -> update it: fresh SAS, and the resyncs,
 *                                      rebuilds, retirements and replicas to
 *                                      stop writing the control plane asks for
 *                                      (a replica added is never a reopen)
 * - served, no longer desired       -> detach; reported STOPPED once, then forgotten
 * - FAILED                          -> stays, reported, until dropped or given a new epoch
 *
 * Concurrency: one pass at a time. `apply()` during a pass records the
 * newest desired state and the running pass goes round once more with it;
 * an attach that could not be done (storage or socket trouble) is retried
 * with backoff by a pass of its own.
 */
import type { DesiredState, VolumeReport } from "../../contract/node.ts";
import { nextDelay } from "./backoff.ts";
import { refusal, type ServeContext, ServedVolume } from "./served-volume.ts";

const RETRY = { intervalMs: 2_000, maxMs: 60_000 };

export class Reconciler {
  readonly #ctx: ServeContext;
  readonly #served = new Map<string, ServedVolume>();
  /** Detached volumes still to be reported STOPPED once. */
  #stopped: VolumeReport[] = [];
  #wanted: DesiredState | undefined;
  #last: DesiredState | undefined;
  #pass: Promise<void> | undefined;
  #failures = 0;
  #retry: NodeJS.Timeout | undefined;
  #adopted = false;
  #stopping = false;

  constructor(ctx: ServeContext) {
    this.#ctx = ctx;
  }

  /** Serve `desired`; resolves when a pass that saw it has ended. */
  apply(desired: DesiredState): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    this.#wanted = desired;
    this.#pass ??= this.#run().finally(() => {
      this.#pass = undefined;
    });
    return this.#pass;
  }

  /** What the next report says about volumes, STOPPED ones included; `withStats`: see ServedVolume.report. */
  reports(withStats: boolean): VolumeReport[] {
    const served = [...this.#served.values()].map((v) => v.report(withStats));
    const names = new Set(served.map((r) => r.volume));
    return [...served, ...this.#stopped.filter((r) => !names.has(r.volume))];
  }

  /** A report carrying `sent` succeeded: STOPPED reports in it are done. */
  delivered(sent: VolumeReport[]): void {
    const done = new Set(sent.filter((r) => r.state === "STOPPED"));
    this.#stopped = this.#stopped.filter((r) => !done.has(r));
  }

  volumes(): ServedVolume[] {
    return [...this.#served.values()];
  }

  /**
   * The agent stops: no more passes; every export drained and flushed, the
   * kernel bindings kept for the next agent (systemd restarts it).
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#retry);
    await this.#pass;
    await Promise.all([...this.#served.values()].map((v) => v.stop()));
  }

  async #run(): Promise<void> {
    while (this.#wanted && !this.#stopping) {
      const desired = this.#wanted;
      this.#wanted = undefined;
      this.#last = desired;
      const retry = await this.#once(desired);
      clearTimeout(this.#retry);
      this.#failures = retry ? this.#failures + 1 : 0;
      if (retry && !this.#stopping) {
        const delay = nextDelay(this.#failures, RETRY);
        this.#retry = setTimeout(() => {
          if (this.#last && !this.#wanted) void this.apply(this.#last);
        }, delay);
      }
    }
  }

  /** One pass; true when something is left to retry. */
  async #once(desired: DesiredState): Promise<boolean> {
    const { log } = this.#ctx;
    const wanted = new Map(desired.attachments.map((a) => [a.volume, a]));
    // Detaches first: a volume moving to a new epoch must let go of its socket and device.
    for (const [name, served] of this.#served) {
      const want = wanted.get(name);
      if (want && served.matches(want)) continue;
      await served.detach();
      this.#served.delete(name);
      if (!want && served.state === "STOPPED") this.#stopped.push(served.report(true));
    }
    if (!this.#adopted) await this.#dropStaleBindings(wanted);
    let retry = false;
    for (const want of wanted.values()) {
      if (this.#stopping) break;
      const served = this.#served.get(want.volume);
      if (served) {
        served.update(want);
        continue;
      }
      const refused = refusal(want);
      if (refused) {
        this.#served.set(want.volume, ServedVolume.refused(want, this.#ctx, refused));
        continue;
      }
      try {
        this.#served.set(want.volume, await ServedVolume.attach(want, this.#ctx));
        this.#stopped = this.#stopped.filter((r) => r.volume !== want.volume);
      } catch (err) {
        log.warn({ err, volume: want.volume, epoch: want.epoch }, "attach failed; will retry");
        retry = true;
      }
    }
    return retry;
  }

  /**
   * Bindings an earlier run left for volumes this node no longer serves
   * are torn down once; those still desired are re-adopted by bind().
   */
  async #dropStaleBindings(wanted: Map<string, unknown>): Promise<void> {
    const binder = this.#ctx.binder;
    if (!binder) {
      this.#adopted = true;
      return;
    }
    try {
      for (const b of await binder.recorded()) {
        if (wanted.has(b.volume)) continue;
        this.#ctx.log.info({ volume: b.volume, device: b.device }, "dropping a stale binding");
        await binder.unbind(b.volume);
      }
      this.#adopted = true;
    } catch (err) {
      this.#ctx.log.warn({ err }, "cannot list or drop earlier bindings; will try again");
    }
  }
}
