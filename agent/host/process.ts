/**
 * Processes the binders start and may have to stop in a later run (nbdfuse):
 * identified by pid *and* start time, so that a pid reused by an unrelated
 * process after a reboot or a long downtime is never signalled.
 */
import { readFile } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";

/**
 * Start time of a live process (field 22 of /proc/<pid>/stat, clock ticks
 * since boot), or null when there is none. A zombie counts as gone: it
 * serves nothing, and whoever adopted it will reap it.
 */
export async function processStartTime(pid: number): Promise<number | null> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // comm (field 2) may hold spaces and parentheses: count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const state = fields[0];
  const start = Number(fields[19]);
  if (state === "Z" || state === "X" || !Number.isSafeInteger(start)) return null;
  return start;
}

/** Whether `pid` is still the process that started at `startTime`. */
export async function isSameProcess(pid: number, startTime: number): Promise<boolean> {
  return (await processStartTime(pid)) === startTime;
}

export interface StopOptions {
  /** Resolves when the process has exited: given for our own children, whose exit we see. */
  exited?: Promise<unknown>;
  /** How long it may take to exit on its own before SIGTERM, then before SIGKILL. */
  graceMs?: number;
  /** Send SIGTERM at once: for a process that never exits on its own. */
  terminate?: boolean;
}

/**
 * Wait for a process to exit, asking it with SIGTERM and then SIGKILL when
 * it takes longer than the grace period. Does nothing if it is gone or the
 * pid now belongs to another process.
 */
export async function stopProcess(pid: number, startTime: number, opts: StopOptions = {}): Promise<void> {
  const graceMs = opts.graceMs ?? 5_000;
  const signals = opts.terminate ? (["SIGTERM", "SIGKILL"] as const) : ([null, "SIGTERM", "SIGKILL"] as const);
  for (const signal of signals) {
    if (!(await isSameProcess(pid, startTime))) return;
    if (signal) {
      try {
        process.kill(pid, signal);
      } catch {
        return; // gone in between
      }
    }
    if (await exitsWithin(pid, startTime, graceMs, opts.exited)) return;
  }
}

/**
 * Our own child's exit is an event; another run's process can only be
 * watched through /proc, so that case polls, backing off to 100 ms.
 */
async function exitsWithin(
  pid: number,
  startTime: number,
  ms: number,
  exited: Promise<unknown> | undefined,
): Promise<boolean> {
  const stop = new AbortController();
  const timeout = delay(ms, false, { signal: stop.signal }).catch(() => false);
  const watched = exited
    ? exited.then(() => true)
    : (async () => {
        for (let wait = 5; !stop.signal.aborted; wait = Math.min(wait * 2, 100)) {
          if (!(await isSameProcess(pid, startTime))) return true;
          await delay(wait, undefined, { signal: stop.signal }).catch(() => {});
        }
        return false;
      })();
  try {
    return await Promise.race([watched, timeout]);
  } finally {
    stop.abort();
  }
}
