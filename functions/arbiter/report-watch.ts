/**
 * Waiting for a node's next report: a detach waits for the volume's owner
 * to say it has drained it (detach-drain.ts). A report recorded by this
 * process wakes the waiters of that node at once; one recorded by another
 * Functions instance is found by re-reading the node row every so often.
 *
 * One set of waiters per registry object: apps built over other registry
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

const reportsByRegistry = new WeakMap<Registry, NodeWakeups>();

/** Waiters woken by every report of a node recorded in this process, made on first use. */
export function reportsRecorded(registry: Registry): NodeWakeups {
  let wakeups = reportsByRegistry.get(registry);
  if (!wakeups) {
    wakeups = newWakeups();
    reportsByRegistry.set(registry, wakeups);
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
