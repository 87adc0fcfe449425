/**
 * The system tools the binders drive (nbd-client, nbdfuse, losetup,
 * fusermount3): where they are, and running one to completion.
 */
import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { BindError } from "./errors.ts";

/** sbin directories are searched too: a service's PATH often lacks them. */
const EXTRA_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/** Absolute path of an executable `name`, or null when it is not installed. */
export function findTool(name: string): string | null {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), ...EXTRA_DIRS];
  for (const dir of dirs) {
    if (!dir) continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return null;
}

/** `findTool`, or a DRIVER_MISSING error naming the Debian package. */
export function requireTool(name: string, debianPackage: string): string {
  const path = findTool(name);
  if (!path) throw new BindError("DRIVER_MISSING", `${name} is not installed (apt-get install ${debianPackage})`);
  return path;
}

export interface ToolOutput {
  stdout: string;
  stderr: string;
  /** Exit status; -1 when the tool could not be run or was killed. */
  code: number;
}

/** No tool here should take this long; a hung one must not hang a bind. */
const DEFAULT_TIMEOUT_MS = 60_000;

/** Run a tool to completion; never rejects, the exit status tells. */
export function runTool(path: string, args: string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ToolOutput> {
  return new Promise((resolve) => {
    execFile(path, args, { timeout: timeoutMs, encoding: "utf8", maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) {
        resolve({ stdout, stderr, code: 0 });
        return;
      }
      const code = typeof err.code === "number" ? err.code : -1;
      resolve({ stdout, stderr: stderr || err.message, code });
    });
  });
}

/** What a tool printed, on one line, for an error message. */
export function said(out: ToolOutput): string {
  return `${out.stderr}${out.stdout}`.trim().replace(/\s*\n\s*/g, "; ") || "no output";
}
