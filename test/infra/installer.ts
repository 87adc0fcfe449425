/**
 * Drives the real infra/install-agent.sh with bash, as `curl | sudo bash`
 * would, and looks at what it left under its `--root`.
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink, stat } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { promisify } from "node:util";

export const REPOSITORY = resolve(import.meta.dirname, "../..");
export const SCRIPT = join(REPOSITORY, "infra/install-agent.sh");
/** The project's Node 22 (the `node@22` devDependency), whatever `node` the machine has. */
export const NODE = join(REPOSITORY, "node_modules/node/bin/node");
export const BUNDLE = join(REPOSITORY, "dist/pagedisk.mjs");

export interface InstallerRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Extra environment on top of this process's. */
  env?: NodeJS.ProcessEnv;
  /** Run this script text from stdin (`bash -s -- args`) instead of the file. */
  script?: string;
}

/** Run the installer to completion; never rejects on a non-zero exit. */
export function runInstaller(args: string[], opts: RunOptions = {}): Promise<InstallerRun> {
  const argv = opts.script === undefined ? [SCRIPT, ...args] : ["-s", "--", ...args];
  const child = spawn("bash", argv, {
    env: { ...process.env, ...opts.env },
    stdio: [opts.script === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  if (child.stdin) {
    // bash reads a piped script as it goes: one that exits early leaves the rest unread (EPIPE).
    child.stdin.on("error", () => {});
    child.stdin.end(opts.script);
  }
  return new Promise((done, fail) => {
    child.once("error", fail);
    child.once("close", (code, signal) =>
      done({ code: code ?? (signal ? 128 : -1), stdout, stderr }),
    );
  });
}

/** What one path under the root looks like: enough to tell any change. */
export interface Entry {
  type: "file" | "dir" | "symlink";
  /** Permission bits, e.g. 0o600. */
  mode: number;
  mtimeMs: number;
  /** SHA-256 of a file's content, a symlink's target. */
  content?: string;
}

/** Every path below `root` (relative, sorted) and its entry. */
export async function snapshotTree(root: string): Promise<Record<string, Entry>> {
  const out: Record<string, Entry> = {};
  async function walk(dir: string): Promise<void> {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const st = await lstat(path);
      const key = relative(root, path);
      const mode = st.mode & 0o7777;
      if (st.isSymbolicLink()) {
        out[key] = { type: "symlink", mode, mtimeMs: st.mtimeMs, content: await readlink(path) };
      } else if (st.isDirectory()) {
        out[key] = { type: "dir", mode, mtimeMs: st.mtimeMs };
        await walk(path);
      } else {
        const content = createHash("sha256").update(await readFile(path)).digest("hex");
        out[key] = { type: "file", mode, mtimeMs: st.mtimeMs, content };
      }
    }
  }
  await walk(root);
  return out;
}

/** Permission bits of a path. */
export async function modeOf(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

/**
 * A systemd unit as section -> key -> values (a key may repeat). Comments
 * and blank lines are dropped; values are kept verbatim.
 */
export function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const unit: Record<string, Record<string, string[]>> = {};
  let section: Record<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = unit[header[1]!] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (!section || eq < 0) throw new Error(`not a unit line: ${line}`);
    (section[line.slice(0, eq)] ??= []).push(line.slice(eq + 1));
  }
  return unit;
}

const run = promisify(execFile);

/**
 * Build dist/pagedisk.mjs when it is missing or older than any source the
 * bundle is made of (agent/, contract/, the build script).
 */
export async function ensureBundleBuilt(): Promise<void> {
  const built = await stat(BUNDLE).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  const newest = Math.max(
    await newestMtime(join(REPOSITORY, "agent")),
    await newestMtime(join(REPOSITORY, "contract")),
    (await stat(join(REPOSITORY, "infra/build.mjs"))).mtimeMs,
  );
  if (built >= newest) return;
  await run(process.execPath, [join(REPOSITORY, "infra/build.mjs")], { cwd: REPOSITORY });
}

async function newestMtime(dir: string): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    newest = Math.max(newest, (await stat(join(entry.parentPath, entry.name))).mtimeMs);
  }
  return newest;
}
