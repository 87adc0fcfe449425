/**
 * The agent's logger (pino, debug level) writing its JSON records into an
 * array instead of stderr, so that a test can read what a loop said; each
 * record wakes `changes`.
 */
import { pino } from "pino";
import type { Logger } from "../../agent/log.ts";
import type { Changes } from "./served-control-plane.ts";

export type LogRecord = Record<string, unknown> & { msg?: string; level?: number };

export function recordingLog(changes: Changes): { log: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const log = pino(
    { level: "debug" },
    {
      write(line: string) {
        records.push(JSON.parse(line) as LogRecord);
        changes.notify();
      },
    },
  );
  return { log, records };
}
