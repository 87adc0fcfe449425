/**
 * The heartbeat: every interval, tell the control plane this node is alive,
 * how its volumes are doing and what happened (queued events). While the
 * control plane does not answer, back off with jitter (never faster than the
 * interval) and keep everything unsent for the next try; volumes keep serving.
 * A 401/403 means the node was removed or its credential revoked: the loop
 * ends and says so through `onRejected`.
 */
import type { Node, VolumeReport } from "../../contract/node.ts";
import type { Logger } from "../log.ts";
import type { ApiClientError } from "./api-client.ts";
import { nextDelay } from "./backoff.ts";
import type { EventQueue } from "./event-queue.ts";
import type { Facts } from "./facts.ts";
import { isCredentialRejected, type NodeClient } from "./node-client.ts";
import { Pause } from "./pause.ts";

/** Longest wait between tries while the control plane is away. */
const MAX_BACKOFF_MS = 30_000;

export interface HeartbeatLoopOptions {
  client: NodeClient;
  intervalMs: number;
  agentVersion: string;
  /** Sent with the first successful heartbeat after start. */
  facts: Facts;
  /** Volume reports as of now. */
  volumes(): VolumeReport[];
  /** The newest desired-state generation applied (see Heartbeat.appliedGeneration). */
  appliedGeneration?(): number | undefined;
  /** A heartbeat carrying `sent` succeeded. */
  delivered(sent: VolumeReport[]): void;
  events: EventQueue;
  /** The control plane's answer: the node as recorded. */
  onAnswer(node: Node): void;
  /** The credential was refused; the loop has ended. */
  onRejected(err: ApiClientError): void;
  log: Logger;
  random?: () => number;
}

export class HeartbeatLoop {
  readonly #o: HeartbeatLoopOptions;
  readonly #pause = new Pause();
  readonly #abort = new AbortController();
  #running: Promise<void> | undefined;
  #connected = false;
  #lastHeartbeatAt: string | null = null;
  /** soon() was called: the next beat goes without waiting for the interval. */
  #soon = false;

  constructor(opts: HeartbeatLoopOptions) {
    this.#o = opts;
  }

  /** Whether the last heartbeat was answered. */
  get connected(): boolean {
    return this.#connected;
  }

  /** When the last answered heartbeat was sent (ISO), null before the first. */
  get lastHeartbeatAt(): string | null {
    return this.#lastHeartbeatAt;
  }

  start(): void {
    this.#running ??= this.#run();
  }

  /**
   * Beat now rather than at the interval (a detach waits for the node to
   * say it has drained a volume); while the control plane does not answer,
   * the backoff still applies.
   */
  soon(): void {
    this.#soon = true;
    if (this.#connected) this.#pause.wake();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.#pause.wake();
    await this.#running;
  }

  async #run(): Promise<void> {
    const o = this.#o;
    const signal = this.#abort.signal;
    let failures = 0;
    let factsSent = false;
    while (!signal.aborted) {
      this.#soon = false;
      const volumes = o.volumes();
      const events = o.events.peek();
      const appliedGeneration = o.appliedGeneration?.();
      const sentAt = new Date().toISOString();
      try {
        const node = await o.client.heartbeat(
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
        if (!this.#connected) o.log.info({ after: failures }, "control plane reached");
        this.#connected = true;
        this.#lastHeartbeatAt = sentAt;
        failures = 0;
        o.log.debug(
          { volumes: volumes.map((v) => `${v.volume}:${v.epoch}:${v.state}`), events: events.length },
          "heartbeat answered",
        );
        o.onAnswer(node);
      } catch (err) {
        if (signal.aborted) break;
        if (isCredentialRejected(err)) {
          o.log.error(
            { code: err.code, status: err.status, message: err.message },
            "the control plane refused this node's credential (node removed or credential revoked): stopping",
          );
          this.#connected = false;
          o.onRejected(err);
          return;
        }
        failures++;
        if (this.#connected || failures === 1) {
          o.log.warn({ err: (err as Error).message }, "heartbeat failed; volumes keep serving");
        }
        this.#connected = false;
      }
      if (this.#soon && failures === 0) continue;
      await this.#pause.wait(nextDelay(failures, { intervalMs: o.intervalMs, maxMs: MAX_BACKOFF_MS }, o.random));
    }
  }
}
