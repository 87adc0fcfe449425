/**
 * The node's steady loop: a heartbeat to the liveness table every interval
 * (liveness-beat.ts), and a fetch of the desired state only when the
 * control plane rang (a beat answered 412), when the SAS tokens near their
 * expiry, now and then as a safety net, and at start. An idle node thus
 * costs one Table transaction per beat and no Functions execution.
 *
 * Beats never wait for a fetch: the API may be slow (a cold start) or away,
 * and a node must not look dead because of it. That makes the two race,
 * and the rules below keep a ring from being lost in the race:
 *
 * - The control plane reads the row's ETag before the rest of the desired
 *   state, so the ETag a fetch returns covers every change in the answer.
 * - The agent adopts the newer of that ETag and its own last write's (a
 *   Table ETag is the write's time), so a beat that landed during the
 *   fetch does not look like a ring afterwards.
 * - A beat unconditional on the ETag (`*`) hides any ring before it, so it
 *   is sent only right after a 412, to keep the node alive: the 412 has
 *   made a fetch due that no fetch already in flight can clear, so the
 *   ring it heard, and any that landed just before the `*`, are fetched.
 * - A 412 (or a `refresh()` without a generation) during a fetch means a
 *   change the fetch may have missed: the fetch does not clear the need to
 *   fetch, and another follows. So does a `refresh(generation)` (a
 *   report's answer named the node's generation) during a fetch, unless
 *   the fetch brought that generation or a later one.
 * - A `refresh(generation)` for a generation already fetched is dropped:
 *   the desired state it names is being applied, or has been (a report
 *   sent during an apply is answered with the generation being applied).
 * - A SAS refused while the API answers (the policy dropped, the key
 *   rotated) sends the agent to fetch, but not at every beat: the fetches
 *   back off while the refusals go on.
 *
 * A fetch the control plane refuses (401/403: the node removed, its
 * credential revoked) ends the loop through `onRejected`.
 */
import type { DesiredState, LivenessTarget } from "../../contract/node.ts";
import type { Logger } from "../log.ts";
import type { ApiClientError } from "./api-client.ts";
import { nextDelay } from "./backoff.ts";
import { beat, type BeatBody, type BeatOutcome, newerEtag } from "./liveness-beat.ts";
import { isCredentialRejected, type NodeClient } from "./node-client.ts";
import { Pause } from "./pause.ts";

/** Fetch the desired state at least this often, whatever the beats say. */
export const FETCH_EVERY_MS = 30 * 60_000;
/** The old name of FETCH_EVERY_MS: bench/serverless.ts still imports it. */
export const REFRESH_MS = FETCH_EVERY_MS;
/** Beats before the first desired state tells the interval. */
const DEFAULT_INTERVAL_MS = 2_000;
/**
 * Fetches back off to this at most while the API fails: a volume failed
 * over to this node during an API outage is served at most this long after
 * the API answers again.
 */
const MAX_FETCH_BACKOFF_MS = 8_000;
/** Fetches back off to this while beats keep being refused and the API answers. */
const MAX_REFUSED_BACKOFF_MS = 60_000;

export interface LivenessLoopOptions {
  client: NodeClient;
  /** The last target known (saved across restarts), to beat before the first fetch answers. */
  target?: LivenessTarget | undefined;
  /** A new target arrived: save it, so a restart during an API outage can still beat. */
  saveTarget?(target: LivenessTarget): Promise<void>;
  apply(desired: DesiredState): Promise<void>;
  /** A pass over generation `generation` has ended (also when it failed: it will not be retried as such). */
  applied?(generation: number): void;
  /** The control plane refused the node's credential; the loop has ended. */
  onRejected(err: ApiClientError): void;
  log: Logger;
  /** Monotonic milliseconds; the beat's `gap` and the loop's schedule use it. */
  monotonic?: () => number;
  /** The wall clock: what a beat claims (`at`), and what SAS expiries are compared with. */
  now?: () => Date;
  random?: () => number;
  /** Sends one beat; liveness-beat.ts `beat` unless a test swaps the transport. */
  send?: (url: string, ifMatch: string, body: BeatBody) => Promise<BeatOutcome>;
}

export class LivenessLoop {
  readonly #o: LivenessLoopOptions;
  readonly #now: () => Date;
  readonly #pause = new Pause();
  readonly #stop = new AbortController();
  #running: Promise<void> | undefined;
  #target: LivenessTarget | undefined;
  /** The ETag of the row as this agent last knew it; set wherever #target is. */
  #etag: string | undefined;
  #fetching: Promise<void> | undefined;
  #needFetch = true;
  /** 412s and refresh() calls without a generation; a fetch clears the need only if none came while it ran. */
  #rings = 0;
  /**
   * The newest generation a refresh() asked for while the current fetch
   * was out (a fetch sent after a refresh reads that generation or a later
   * one): a fetch that brings less does not clear the need.
   */
  #wanted = -1;
  /** The newest generation a fetch brought (-1 before the first). */
  #generation = -1;
  /** Beats refused in a row. */
  #refused = 0;
  #fetchFailures = 0;
  #fetchNotBefore = 0;
  #refreshAt = 0;
  #lastLandedAt: number | undefined;
  #lastLandedIso: string | null = null;
  #landing = false;
  #applying: Promise<void> = Promise.resolve();

  constructor(opts: LivenessLoopOptions) {
    this.#o = opts;
    this.#now = opts.now ?? (() => new Date());
    this.#target = opts.target;
    this.#etag = opts.target?.etag;
  }

  /** Whether the last beat landed. */
  get connected(): boolean {
    return this.#landing;
  }

  /** When the last beat landed (ISO), null before the first. */
  get lastHeartbeatAt(): string | null {
    return this.#lastLandedIso;
  }

  start(): void {
    this.#running ??= this.#run();
  }

  /**
   * Fetch the desired state at the next beat: a report's answer said the
   * node's generation is `generation`. Nothing to do when the last fetch
   * brought that one or a later one. Without a generation, fetch anyway.
   */
  refresh(generation?: number): void {
    if (generation === undefined) this.#rings++;
    else if (generation <= this.#generation) return;
    else this.#wanted = Math.max(this.#wanted, generation);
    this.#needFetch = true;
    this.#pause.wake();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    this.#pause.wake();
    await this.#running;
    await this.#fetching;
    await this.#applying;
  }

  async #run(): Promise<void> {
    const mono = this.#o.monotonic ?? (() => performance.now());
    while (!this.#stop.signal.aborted) {
      const started = mono();
      await this.#beat(mono);
      const due = this.#needFetch || started >= this.#refreshAt;
      if (due && this.#fetching === undefined && started >= this.#fetchNotBefore) {
        this.#fetching = this.#fetch(mono).finally(() => {
          this.#fetching = undefined;
        });
      }
      if (this.#stop.signal.aborted) break;
      const interval = this.#target?.intervalMs ?? DEFAULT_INTERVAL_MS;
      await this.#pause.wait(Math.max(0, interval - (mono() - started)));
    }
  }

  async #beat(mono: () => number): Promise<void> {
    const target = this.#target;
    if (!target) return;
    // Set with every target (the constructor, #fetch): a conditional beat never falls back to `*`.
    const etag = this.#etag;
    if (etag === undefined) throw new Error("a liveness target without an ETag");
    const send = this.#o.send ?? beat;
    const body = (): BeatBody => {
      const now = mono();
      return {
        at: this.#now().toISOString(),
        ...(this.#lastLandedAt === undefined ? {} : { gap: Math.round(now - this.#lastLandedAt) }),
      };
    };
    let outcome = await send(target.url, etag, body());
    if (outcome.kind === "rung") {
      this.#rings++;
      this.#needFetch = true;
      this.#o.log.debug("liveness row rung: the desired state changed");
      // Stay alive: the fetch now due covers whatever the unconditional beat hides (see the header).
      outcome = await send(target.url, "*", body());
    }
    switch (outcome.kind) {
      case "landed":
        this.#etag = outcome.etag;
        this.#lastLandedAt = mono();
        this.#lastLandedIso = this.#now().toISOString();
        this.#refused = 0;
        if (!this.#landing) this.#o.log.info("heartbeats land");
        this.#landing = true;
        return;
      case "rung":
        break;
      case "refused":
        // The first refusal fetches at once (a new SAS); while they go on, fetches back off.
        this.#refused++;
        if (this.#refused > 1) {
          this.#fetchNotBefore = Math.max(
            this.#fetchNotBefore,
            mono() + nextDelay(this.#refused - 1, { intervalMs: 2_000, maxMs: MAX_REFUSED_BACKOFF_MS }, this.#o.random),
          );
        }
        this.#needFetch = true;
        break;
      case "gone":
        // The control plane says what is wrong when the desired state is fetched.
        this.#needFetch = true;
        break;
      case "failed":
        break;
    }
    if (this.#landing) {
      this.#o.log.warn({ outcome }, "heartbeat did not land; volumes keep serving");
    }
    this.#landing = false;
  }

  async #fetch(mono: () => number): Promise<void> {
    const o = this.#o;
    const rings = this.#rings;
    this.#wanted = -1;
    let desired: DesiredState;
    try {
      desired = await o.client.desired({ signal: this.#stop.signal });
    } catch (err) {
      if (this.#stop.signal.aborted) return;
      if (isCredentialRejected(err)) {
        o.onRejected(err);
        this.#stop.abort();
        this.#pause.wake();
        return;
      }
      this.#fetchFailures++;
      this.#fetchNotBefore =
        mono() + nextDelay(this.#fetchFailures, { intervalMs: 1_000, maxMs: MAX_FETCH_BACKOFF_MS }, o.random);
      o.log.warn({ err: (err as Error).message, failures: this.#fetchFailures }, "cannot fetch the desired state");
      return;
    }
    this.#fetchFailures = 0;
    if (this.#refused <= 1) this.#fetchNotBefore = 0;
    const first = this.#target === undefined;
    const fresh = !sameTarget(this.#target, desired.liveness);
    this.#target = desired.liveness;
    this.#etag = newerEtag(this.#etag, desired.liveness.etag);
    this.#generation = Math.max(this.#generation, desired.generation);
    if (this.#rings === rings && this.#wanted <= desired.generation) this.#needFetch = false;
    this.#refreshAt = mono() + Math.min(FETCH_EVERY_MS, renewIn(desired.attachments, this.#now().getTime()));
    if (fresh) await o.saveTarget?.(desired.liveness).catch((err: unknown) => o.log.warn({ err }, "cannot save the liveness target"));
    // The first target known: beat now rather than an interval after start.
    if (first) this.#pause.wake();
    // Passes apply one at a time and in order; a beat never waits for one.
    this.#applying = this.#applying.then(async () => {
      try {
        await o.apply(desired);
      } catch (err) {
        o.log.error({ err }, "reconcile failed");
      }
      o.applied?.(desired.generation);
      // Said once a pass is done, with the tokens it handed on: what waits on a renewal can tell.
      o.log.debug(
        { generation: desired.generation, sasExpiresAt: desired.attachments.map((a) => a.sasExpiresAt) },
        "desired state applied",
      );
    });
  }
}

/**
 * Milliseconds from `now` until the SAS tokens of `attachments` should be
 * renewed: when half the first one's time is left (a SAS lives at most 15
 * minutes, so a fetch every 7.5 minutes or less; a missed fetch still
 * leaves a quarter), at once when one has expired already.
 */
export function renewIn(attachments: ReadonlyArray<{ sasExpiresAt: string }>, now: number): number {
  let at = Number.POSITIVE_INFINITY;
  for (const a of attachments) at = Math.min(at, Date.parse(a.sasExpiresAt));
  return Math.max(0, (at - now) / 2);
}

function sameTarget(a: LivenessTarget | undefined, b: LivenessTarget): boolean {
  return a !== undefined && a.url === b.url && a.etag === b.etag && a.intervalMs === b.intervalMs;
}
