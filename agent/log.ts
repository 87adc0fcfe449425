/**
 * JSON logs on stderr (stdout is kept for the one human line `serve` prints).
 * pino writes synchronously to fd 2, so the last lines before an exit are kept.
 */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: opts.name ?? "pagedisk",
      level: opts.level ?? process.env.PAGEDISK_LOG_LEVEL ?? "info",
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: 2, sync: true }),
  );
}
