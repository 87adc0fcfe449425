/**
 * `pagedisk pool release|annotate` and the release table of `pool show`:
 * moving every replica off a pool, and watching it happen.
 *
 * `release --watch` asks the API for the pool every `--interval` seconds
 * until its usage settles: RELEASED (exit 0; also when `removal=ready` had
 * it removed right after), FAILED or back IN_USE (exit 1). On a terminal
 * it redraws one progress line; otherwise it prints a line per change, so
 * a log shows each step once.
 */
import { InvalidArgumentError } from "commander";
import type {
  Pool,
  PoolAnnotationsPatch,
  ReleaseEntry,
  ReleaseStatus,
} from "../../contract/pool.ts";
import { type ApiClient, ApiClientError } from "../control/api-client.ts";
import { UsageError } from "../serve/args.ts";
import { EXIT } from "./command.ts";
import { print, printFields, printJson, printTable } from "./output.ts";

/** Default pause between two looks at a pool being released: the sweeper's own period. */
export const WATCH_INTERVAL_SECONDS = 2;
const BAR_WIDTH = 30;

/** `--interval`: a positive number of seconds, fractions allowed. */
export function asInterval(text: string): number {
  const seconds = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !(seconds > 0))
    throw new InvalidArgumentError(`"${text}" is not a positive number of seconds`);
  return seconds;
}

const KEYS = ["removal", "health", "action"] as const;

/** `removal=ready health=bad action=remove health-` as a patch; `UsageError` for anything else. */
export function annotationsOf(words: readonly string[]): PoolAnnotationsPatch {
  if (words.length === 0)
    throw new UsageError("give at least one annotation: key=value, or key- to remove one");
  const patch: Record<string, string | null> = {};
  for (const word of words) {
    const removed = /^([a-z]+)-$/.exec(word);
    const set = /^([a-z]+)=(.*)$/.exec(word);
    const key = (removed ?? set)?.[1];
    if (key === undefined || !(KEYS as readonly string[]).includes(key))
      throw new UsageError(
        `${word}: annotations are removal=ready, health=bad|suspect, action=add|remove (key- removes one)`,
      );
    if (key in patch) throw new UsageError(`${key} is given twice`);
    if (removed && key === "action")
      throw new UsageError("action is not kept, so there is none to remove");
    // Values are checked by the API, which says which ones it takes.
    patch[key] = set ? set[2]! : null;
  }
  return patch as PoolAnnotationsPatch;
}

/** `42% RELEASING: releasing: 3 of 7 replica(s) moved, 4 moving` */
export function releaseLine(p: Pool): string {
  const r = p.release;
  if (!r) return `${p.usage}: no release`;
  return `${r.progress}% ${p.usage}: ${r.message}`;
}

/**
 * The `pool list` cell: `42% (3 of 7 moved)` while RELEASING, `1 cannot
 * move` once FAILED, `-` otherwise (the usage column says the rest).
 */
export function releaseCell(p: Pool): string {
  const r = p.release;
  if (!r) return "-";
  const count = (status: ReleaseStatus) => r.counts[status] ?? 0;
  if (p.usage === "RELEASING") {
    const total = Object.values(r.counts).reduce((sum, n) => sum + (n ?? 0), 0);
    return `${Math.floor(r.progress)}% (${count("MOVED")} of ${total} moved)`;
  }
  if (p.usage === "FAILED" && count("FAILED") > 0) return `${count("FAILED")} cannot move`;
  return "-";
}

/** The release block of `pool show` and `pool release`: summary fields, then one row per replica. */
export function printRelease(p: Pool): void {
  const r = p.release;
  if (!r) return;
  print("");
  printFields([
    ["release", releaseLine(p)],
    ["started", r.startedAt],
    ["finished", r.finishedAt ?? "-"],
  ]);
  print("");
  printTable(
    ["volume", "replica", "status", "progress", "message"],
    r.entries.map((e: ReleaseEntry) => [
      e.volume,
      e.replica,
      e.status,
      `${e.progress}%`,
      e.message ?? "",
    ]),
    "no replicas on this pool",
  );
  if (r.omitted > 0) print(`(${r.omitted} more not listed)`);
}

/** Whether a release is over, and the exit code it means. */
function settled(p: Pool): number | undefined {
  if (p.usage === "RELEASED" || p.usage === "REMOVED") return EXIT.ok;
  if (p.usage === "RELEASING") return undefined;
  return EXIT.api;
}

/**
 * Follow the release of `first` (as the release request answered) until it
 * settles; returns the exit code. `api` reads the pool again each look.
 */
export async function watchRelease(
  api: ApiClient,
  first: Pool,
  json: boolean,
  intervalSeconds: number,
): Promise<number> {
  const tty = process.stdout.isTTY === true && !json;
  let pool = first;
  let shown = "";
  for (;;) {
    const line = releaseLine(pool);
    if (!json && line !== shown) {
      if (tty) process.stdout.write(`\r\u001b[2K${bar(pool.release?.progress ?? 0)} ${line}`);
      else print(`pool ${pool.name}: ${line}`);
      shown = line;
    }
    const code = settled(pool);
    if (code !== undefined) {
      if (tty) process.stdout.write("\n");
      if (json) printJson(pool);
      else if (code !== EXIT.ok) printRelease(pool);
      if (code !== EXIT.ok)
        process.stderr.write(`pagedisk: release of pool ${pool.name} ended ${pool.usage}\n`);
      return code;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalSeconds * 1000));
    try {
      pool = await api.getPool(pool.name);
    } catch (err) {
      // Released and removed (removal=ready) between two looks: the release is done.
      if (err instanceof ApiClientError && err.code === "PoolNotFound" && pool.release) {
        pool = { ...pool, usage: "REMOVED" };
        continue;
      }
      if (tty) process.stdout.write("\n");
      throw err;
    }
  }
}

/** `[#########.....................]` */
function bar(progress: number): string {
  const done = Math.round((Math.max(0, Math.min(100, progress)) / 100) * BAR_WIDTH);
  return `[${"#".repeat(done)}${".".repeat(BAR_WIDTH - done)}]`;
}
