/**
 * In-process wake-ups for held desired-state requests: a bump of a node's
 * generation made by this process wakes, at once, the requests of that node
 * waiting in this process. Bumps made by other Functions instances are not
 * seen here; the waiting request finds those by re-reading the node row.
 *
 * The same kind of wake-up serves a detach waiting for its volume's owner
 * to drain (detach-drain.ts): `heartbeatsRecorded` is notified by every
 * heartbeat this process records.
 *
 * One set of waiters per registry object. The app and the timers of one
 * host share their registry (runtime.ts), so a failover by this host's
 * sweeper wakes the agents' held requests; apps built over other registry
 * objects (tests build several in one process) never wake each other's.
 */
import type { ControlPlane } from "../control-plane.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import type { Registry } from "../registry/tables.ts";

export interface NodeWakeups {
  /** Wake every request of `node` waiting in this process. */
  notify(node: string): void;
  /** Call `wake` at every later `notify(node)` until the returned function is called. */
  subscribe(node: string, wake: () => void): () => void;
  /** Requests of `node` waiting now; for tests and metrics. */
  waiting(node: string): number;
}

const changesByRegistry = new WeakMap<Registry, NodeWakeups>();
const heartbeatsByRegistry = new WeakMap<Registry, NodeWakeups>();

/** The desired-state waiters of `registry`, made on first use. */
export function desiredChanges(registry: Registry): NodeWakeups {
  return wakeupsOf(changesByRegistry, registry);
}

/** Waiters woken by every heartbeat of a node recorded in this process, made on first use. */
export function heartbeatsRecorded(registry: Registry): NodeWakeups {
  return wakeupsOf(heartbeatsByRegistry, registry);
}

function wakeupsOf(all: WeakMap<Registry, NodeWakeups>, registry: Registry): NodeWakeups {
  let wakeups = all.get(registry);
  if (!wakeups) {
    wakeups = newWakeups();
    all.set(registry, wakeups);
  }
  return wakeups;
}

function newWakeups(): NodeWakeups {
  const waiters = new Map<string, Set<() => void>>();
  return {
    notify(node) {
      for (const wake of [...(waiters.get(node) ?? [])]) wake();
    },
    subscribe(node, wake) {
      let set = waiters.get(node);
      if (!set) waiters.set(node, (set = new Set()));
      // A wrapper per subscription, so the same function subscribed twice is two waiters.
      const entry = () => wake();
      set.add(entry);
      return () => {
        set.delete(entry);
        if (set.size === 0 && waiters.get(node) === set) waiters.delete(node);
      };
    },
    waiting: (node) => waiters.get(node)?.size ?? 0,
  };
}

export interface NodeWatch {
  /** Longest the watch lasts. */
  timeoutMs: number;
  /** How often the row is re-read: the longest a change made by another Functions instance goes unseen. */
  recheckMs: number;
  /** Ends the watch early (a client gone away). */
  signal?: AbortSignal;
}

/**
 * Read node `name`'s row (undefined once it is removed) until `settle`
 * returns a result, and resolve with it; undefined when the watch timed out
 * or was aborted first. The row is read again at once when `wakeups`
 * notifies the node in this process, else every `recheckMs`. Subscribed
 * before the first read, so a notification while a read is on its way is
 * not missed.
 */
export async function watchNode<T>(
  cp: ControlPlane,
  wakeups: NodeWakeups,
  name: string,
  watch: NodeWatch,
  settle: (node: NodeRecord | undefined) => T | undefined,
): Promise<T | undefined> {
  const { signal } = watch;
  const deadline = Date.now() + watch.timeoutMs;
  const table = nodes(cp.registry);
  let heard = false;
  let wake: (() => void) | undefined;
  const unsubscribe = wakeups.subscribe(name, () => {
    heard = true;
    wake?.();
  });
  const onAbort = () => wake?.();
  signal?.addEventListener("abort", onAbort);
  try {
    for (;;) {
      heard = false;
      const result = settle((await table.get(name))?.value);
      if (result !== undefined) return result;
      const left = deadline - Date.now();
      if (left <= 0 || signal?.aborted) return undefined;
      if (!heard) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(watch.recheckMs, left));
          function done(): void {
            clearTimeout(timer);
            wake = undefined;
            resolve();
          }
          wake = done;
        });
      }
      if (signal?.aborted) return undefined;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    unsubscribe();
  }
}
