/**
 * Runs the built `pagedisk` binary as users do, with a clean environment:
 * only PATH, plus what the test passes (no PAGEDISK_* leaks in from the shell).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { BIN } from "../harness/serve.ts";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function pagedisk(
  args: string[],
  opts: { env?: Record<string, string>; cwd: string },
): Promise<CliResult> {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run "npm run build" (npm test does)`);
  return new Promise((done) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: opts.cwd, env: { PATH: process.env.PATH ?? "", ...opts.env } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

/** The lines of a table, split into cells on runs of 2+ blanks. */
export function rows(stdout: string): string[][] {
  return stdout
    .trimEnd()
    .split("\n")
    .map((line) => line.split(/ {2,}/));
}
