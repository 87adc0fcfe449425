/**
 * Locate and run the real NBD client tools the interop tests drive. A
 * missing tool fails the test with the Debian package to install: these
 * tests prove interoperability, so they never skip quietly.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import packages from "../../infra/test-tools.json" with { type: "json" };

/** Each tool and the Debian package that ships it; `npm test` installs them first. */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = packages;

export type Tool = keyof typeof packages;

/** Absolute path of `tool`, or an error naming the package that provides it. */
export function toolPath(tool: Tool): string {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin"];
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, tool))) return join(dir, tool);
  }
  throw new Error(
    `${tool} is not installed: apt-get install ${TOOL_PACKAGES[tool]} (needed by the NBD interop tests)`,
  );
}

export interface ToolResult {
  stdout: string;
  stderr: string;
  /** Exit status; 0 unless `allowFailure` was set. */
  code: number;
}

export interface RunOptions {
  /** Resolve with the exit code instead of rejecting on a non-zero exit. */
  allowFailure?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Kill the tool after this long (a hung client must not hang the suite). */
  timeoutMs?: number;
}

/** Run a tool to completion; rejects with its stderr when it fails. */
export function runTool(tool: Tool, args: string[], opts: RunOptions = {}): Promise<ToolResult> {
  const path = toolPath(tool);
  return new Promise((resolve, reject) => {
    execFile(
      path,
      args,
      {
        env: { ...process.env, ...opts.env },
        timeout: opts.timeoutMs ?? 90_000,
        maxBuffer: 64 * 1024 * 1024,
        encoding: "utf8",
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        if (err && !opts.allowFailure) {
          reject(
            new Error(
              `${tool} ${args.join(" ")} failed (${err.killed ? "killed" : `exit ${String(err.code)}`}):\n${stderr}${stdout}`,
            ),
          );
          return;
        }
        resolve({ stdout, stderr, code });
      },
    );
  });
}
