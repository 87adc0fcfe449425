/**
 * Reports to the control plane: how this node's volumes are doing, what
 * happened (queued events) and which desired-state generation it has
 * applied. Sent when any of that changes, not on a timer: the node's
 * heartbeats go to the liveness table (liveness-loop.ts), so an idle node
 * reports about every `REPORT_EVERY_MS`, only to keep its counters in `node show`
 * from going stale. Numbers that move all the time (a copy's progress,
 * the bytes copied and dirty) go at most every `PROGRESS_EVERY_MS` when
 * nothing else changed.
 *
 * While the control plane does not answer, the loop backs off with jitter
 * and keeps everything unsent for the next try; volumes keep serving and
 * heartbeats keep landing. A 401/403 means the node was removed or its
 * credential revoked: the loop ends and says so through `onRejected`.
 * `EventRefused` means some events are not this node's to report (an
 * event about a volume deleted or an attachment forgotten meanwhile): the
 * control plane recorded nothing of the report, and never will while they
 * are in it, so those events are dropped, with a warning, and the rest is
 * sent again at once.
 */
import type { ReportAnswer, ReportedEvent, VolumeReport } from "../../contract/node.ts";
import type { Logger } from "../log.ts";
import { ApiClientError } from "./api-client.ts";
import { nextDelay } from "./backoff.ts";
import type { EventQueue } from "./event-queue.ts";
import type { Facts } from "./facts.ts";
import { isCredentialRejected, type NodeClient } from "./node-client.ts";
import { Pause } from "./pause.ts";

/** An idle node reports this often, for its counters. */
export const REPORT_EVERY_MS = 10 * 60_000;
/** The old name of REPORT_EVERY_MS: bench/serverless.ts still imports it. */
export const REFRESH_MS = REPORT_EVERY_MS;
/** Copy progress and byte counts alone are reported at most this often. */
export const PROGRESS_EVERY_MS = 15_000;
/** How often the loop looks for a change; reports themselves go only when one is found. */
const LOOK_EVERY_MS = 1_000;
/** Longest wait between tries while the control plane is away. */
const MAX_BACKOFF_MS = 30_000;

export interface ReportLoopOptions {
  client: NodeClient;
  agentVersion: string;
  /** Sent with the first report after start. */
  facts: Facts;
  /**
   * Volume reports as of now; with `withStats`, each volume's statistics
   * since the report before, which closes their window: asked for only
   * when a report goes.
   */
  volumes(withStats: boolean): VolumeReport[];
  /** The newest desired-state generation applied (see NodeReport.appliedGeneration). */
  appliedGeneration?(): number | undefined;
  /** A report carrying `sent` succeeded. */
  delivered(sent: VolumeReport[]): void;
  events: EventQueue;
  /** The control plane's answer: the node's desired generation. */
  onAnswer?(answer: ReportAnswer): void;
  /** The control plane refused the node's credential; the loop has ended. */
  onRejected(err: ApiClientError): void;
  log: Logger;
  /** Monotonic milliseconds. */
  monotonic?: () => number;
  random?: () => number;
}

export class ReportLoop {
  readonly #o: ReportLoopOptions;
  readonly #pause = new Pause();
  readonly #abort = new AbortController();
  #running: Promise<void> | undefined;
  /** soon() was called: look for a change now rather than at the next look. */
  #soon = false;

  constructor(opts: ReportLoopOptions) {
    this.#o = opts;
  }

  start(): void {
    this.#running ??= this.#run();
  }

  /** Look for something to report now (a generation applied, an event queued). */
  soon(): void {
    this.#soon = true;
    this.#pause.wake();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.#pause.wake();
    await this.#running;
  }

  async #run(): Promise<void> {
    const o = this.#o;
    const mono = o.monotonic ?? (() => performance.now());
    const signal = this.#abort.signal;
    let failures = 0;
    let factsSent = false;
    let sentShape: string | undefined;
    let sentProgress: string | undefined;
    let sentAt = Number.NEGATIVE_INFINITY;
    let retryAt = 0;
    while (!signal.aborted) {
      this.#soon = false;
      const now = mono();
      const looked = o.volumes(false);
      const appliedGeneration = o.appliedGeneration?.();
      const shape = JSON.stringify([looked.map(withoutNumbers), appliedGeneration]);
      const progress = JSON.stringify(
        looked.map((v) => v.replicas.map((r) => [r.progress, r.copiedBytes, r.dirtyBytes])),
      );
      const due =
        !factsSent ||
        o.events.size > 0 ||
        shape !== sentShape ||
        (progress !== sentProgress && now - sentAt >= PROGRESS_EVERY_MS) ||
        now - sentAt >= REPORT_EVERY_MS;
      if (due && now >= retryAt) {
        const volumes = o.volumes(true);
        const events = o.events.peek();
        try {
          const answer = await o.client.report(
            {
              agentVersion: o.agentVersion,
              volumes,
              events,
              ...(factsSent ? {} : { facts: o.facts }),
              ...(appliedGeneration === undefined ? {} : { appliedGeneration }),
            },
            signal,
          );
          factsSent = true;
          o.events.delivered(events);
          o.delivered(volumes);
          if (failures > 0) o.log.info({ after: failures }, "control plane reached again");
          failures = 0;
          retryAt = 0;
          sentShape = shape;
          sentProgress = progress;
          sentAt = now;
          o.log.debug(
            { volumes: volumes.map((v) => `${v.volume}:${v.epoch}:${v.state}`), events: events.length },
            "report recorded",
          );
          o.onAnswer?.(answer);
        } catch (err) {
          if (signal.aborted) break;
          if (isCredentialRejected(err)) {
            o.onRejected(err);
            return;
          }
          const refused = refusedEvents(err, events);
          if (refused.length > 0) {
            o.events.refused(refused);
            o.log.warn(
              { events: refused.map((e) => `${e.type}:${e.volume ?? ""}`), reason: (err as Error).message },
              "the control plane refused events; dropped them",
            );
            // Each refusal drops at least one event, so this ends.
            continue;
          }
          failures++;
          if (failures === 1) o.log.warn({ err: (err as Error).message }, "report failed; volumes keep serving");
          retryAt =
            mono() + nextDelay(failures, { intervalMs: LOOK_EVERY_MS, maxMs: MAX_BACKOFF_MS }, o.random);
        }
      }
      if (this.#soon) continue;
      await this.#pause.wait(LOOK_EVERY_MS);
    }
  }
}

/**
 * The events of `sent` that `err` says the control plane refused: those it
 * lists, or all of them when its list is unusable (the report must get
 * through). None unless `err` is an `EventRefused`.
 */
function refusedEvents(err: unknown, sent: ReportedEvent[]): ReportedEvent[] {
  if (!(err instanceof ApiClientError) || err.code !== "EventRefused") return [];
  const listed = (err.details as { refused?: unknown } | undefined)?.refused;
  const indices = Array.isArray(listed)
    ? listed
        .map((r) => (r as { index?: unknown } | null)?.index)
        .filter((i): i is number => Number.isInteger(i) && (i as number) >= 0 && (i as number) < sent.length)
    : [];
  return indices.length > 0 ? indices.map((i) => sent[i]!) : sent;
}

/** A report without what changes all the time (counters, latencies, copy progress). */
function withoutNumbers(v: VolumeReport): unknown {
  const { stats: _stats, replicas, ...rest } = v;
  return {
    ...rest,
    replicas: replicas.map(({ progress: _p, copiedBytes: _c, dirtyBytes: _d, ...r }) => r),
  };
}
