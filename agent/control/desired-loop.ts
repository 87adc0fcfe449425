/**
 * Learning what to serve: a long poll of `GET desired?after=G&waitSeconds=20`
 * that the control plane answers as soon as the node's desired generation
 * moves past G (or after 20 s with the same state: a full fetch at least that
 * often). Each answer is handed to the reconciler. A heartbeat that reports
 * another generation cuts the wait short (another control plane instance may
 * have made the change). SAS tokens are renewed by fetching again when the
 * earliest one is within 15 minutes of its expiry.
 */
import type { DesiredState } from "../../contract/node.ts";
import type { Logger } from "../log.ts";
import type { ApiClientError } from "./api-client.ts";
import { nextDelay } from "./backoff.ts";
import { isCredentialRejected, type NodeClient } from "./node-client.ts";
import { Pause } from "./pause.ts";

/** How long the control plane may hold a poll (it caps this at 25). */
export const LONG_POLL_SECONDS = 20;
/** Fetch new SAS tokens this long before the current ones expire. */
export const SAS_RENEW_BEFORE_MS = 15 * 60_000;
const MAX_BACKOFF_MS = 30_000;

export interface DesiredLoopOptions {
  client: NodeClient;
  /** Fewest milliseconds between two fetches that were answered at once. */
  intervalMs: number;
  apply(desired: DesiredState): Promise<void>;
  /** A pass over generation `generation` has ended (also when it failed: it will not be retried as such). */
  applied?(generation: number): void;
  onRejected(err: ApiClientError): void;
  log: Logger;
  now?: () => number;
  random?: () => number;
}

export class DesiredLoop {
  readonly #o: DesiredLoopOptions;
  readonly #pause = new Pause();
  readonly #stop = new AbortController();
  #poll: AbortController | undefined;
  #generation: number | undefined;
  #running: Promise<void> | undefined;

  constructor(opts: DesiredLoopOptions) {
    this.#o = opts;
  }

  start(): void {
    this.#running ??= this.#run();
  }

  /** The control plane says the node's generation is `generation`: fetch now if that is news. */
  nudge(generation: number | undefined): void {
    if (generation === undefined || generation === this.#generation) return;
    this.#poll?.abort();
    this.#pause.wake();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    this.#poll?.abort();
    this.#pause.wake();
    await this.#running;
  }

  async #run(): Promise<void> {
    const o = this.#o;
    const now = o.now ?? Date.now;
    const stopped = this.#stop.signal;
    let failures = 0;
    let renewAt = Number.POSITIVE_INFINITY;
    while (!stopped.aborted) {
      const started = now();
      // The first fetch, and one for fresh SAS tokens, are answered at once.
      const waitSeconds =
        this.#generation === undefined
          ? 0
          : Math.max(0, Math.min(LONG_POLL_SECONDS, Math.floor((renewAt - started) / 1000)));
      const poll = new AbortController();
      this.#poll = poll;
      let desired: DesiredState;
      try {
        desired = await o.client.desired({
          after: this.#generation,
          waitSeconds,
          signal: AbortSignal.any([stopped, poll.signal]),
        });
      } catch (err) {
        if (stopped.aborted) break;
        // Cut short by a nudge: ask again at once.
        if (poll.signal.aborted) continue;
        if (isCredentialRejected(err)) {
          o.log.error(
            { code: err.code, status: err.status, message: err.message },
            "the control plane refused this node's credential: stopping",
          );
          o.onRejected(err);
          return;
        }
        failures++;
        o.log.warn({ err: (err as Error).message, failures }, "cannot fetch the desired state");
        await this.#pause.wait(
          nextDelay(failures, { intervalMs: o.intervalMs, maxMs: MAX_BACKOFF_MS }, o.random),
        );
        continue;
      } finally {
        this.#poll = undefined;
      }
      failures = 0;
      const changed = desired.generation !== this.#generation;
      this.#generation = desired.generation;
      renewAt = earliestExpiry(desired) - SAS_RENEW_BEFORE_MS;
      try {
        await o.apply(desired);
      } catch (err) {
        o.log.error({ err }, "reconcile failed");
      }
      o.applied?.(desired.generation);
      // An answer given at once with nothing new (a control plane that does not
      // hold, or SAS tokens that are all short) must not turn into a busy loop.
      if (!changed && now() - started < o.intervalMs) {
        await this.#pause.wait(o.intervalMs - (now() - started));
      }
    }
  }
}

function earliestExpiry(desired: DesiredState): number {
  let at = Number.POSITIVE_INFINITY;
  for (const a of desired.attachments) at = Math.min(at, Date.parse(a.sasExpiresAt));
  return at;
}
