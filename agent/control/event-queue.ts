/**
 * Events waiting for a report to carry them (volume-failed, ...). An
 * event leaves the queue only once a report that carried it succeeded, or
 * the control plane refused it (it is not this node's to report, e.g. its
 * volume was deleted meanwhile), so an outage of the control plane delays
 * events but does not lose them;
 * the queue is bounded, and when full the oldest events are dropped (and
 * counted) so that a long outage cannot eat the VM's memory.
 */
import type { ReportedEvent } from "../../contract/node.ts";

/** Events one report may carry (contract/node.ts MAX_REPORTED_EVENTS). */
export const EVENTS_PER_REPORT = 20;
const DEFAULT_CAPACITY = 500;

export class EventQueue {
  readonly #capacity: number;
  #events: ReportedEvent[] = [];
  #dropped = 0;

  constructor(capacity = DEFAULT_CAPACITY) {
    this.#capacity = capacity;
  }

  push(event: ReportedEvent): void {
    this.#events.push(event);
    if (this.#events.length > this.#capacity) {
      this.#events.shift();
      this.#dropped++;
    }
  }

  /** The oldest events, at most what one report carries; they stay queued. */
  peek(): ReportedEvent[] {
    return this.#events.slice(0, EVENTS_PER_REPORT);
  }

  /** The report that carried `sent` (from peek()) succeeded: forget them. */
  delivered(sent: ReportedEvent[]): void {
    // Events dropped for capacity meanwhile may have taken some of `sent` already.
    const gone = new Set(sent);
    this.#events = this.#events.filter((e) => !gone.has(e));
  }

  /**
   * The control plane refused `events` (from peek()): it will never record
   * them, however often they are sent, so they leave the queue rather than
   * hold back every report after them.
   */
  refused(events: ReportedEvent[]): void {
    this.delivered(events);
  }

  get size(): number {
    return this.#events.length;
  }

  /** Events dropped because the queue was full. */
  get dropped(): number {
    return this.#dropped;
  }
}
