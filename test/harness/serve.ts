/**
 * Runs the real bundled binary, `dist/pagedisk.mjs serve ...`, as a child
 * process (built by `npm test` before vitest starts) and waits for the one
 * line it prints on stdout when it serves.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

export const BIN = resolve(import.meta.dirname, "../../dist/pagedisk.mjs");

export interface ServeProcess {
  proc: ChildProcess;
  /** NBD URI printed on stdout. */
  uri: string;
  /** Unix socket path the server listens on. */
  socket: string;
  /** JSON log records seen on stderr so far. */
  logs: Record<string, unknown>[];
  /** Lines of stdout so far. */
  stdout: string[];
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
  /** Send a signal and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  dir: string;
}

/**
 * Start `pagedisk serve TARGET --listen unix:<tmp>/nbd.sock ...args`; when
 * `args` has its own `--listen`, that one is used instead.
 */
export async function startServe(
  target: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<ServeProcess> {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run "npm run build" (npm test does)`);
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-serve-"));
  const socket = join(dir, "nbd.sock");
  const listen = args.includes("--listen") ? [] : ["--listen", `unix:${socket}`];
  const proc = spawn(process.execPath, [BIN, "serve", target, ...listen, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const logs: Record<string, unknown>[] = [];
  const stdout: string[] = [];
  const stderrText: string[] = [];
  createInterface({ input: proc.stderr! }).on("line", (line) => {
    stderrText.push(line);
    try {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not JSON: kept in stderrText for error messages
    }
  });
  const exited = new Promise<number | string>((res) => {
    proc.on("exit", (code, signal) => res(code ?? signal ?? -1));
  });
  const first = new Promise<string>((res, rej) => {
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      stdout.push(line);
      if (stdout.length === 1) res(line);
    });
    exited.then((code) =>
      rej(new Error(`pagedisk serve exited (${code}) before serving:\n${stderrText.join("\n")}`)),
    );
  });
  const line = await first;
  const uri = /(nbd(?:\+unix)?:\/\/\S+)/.exec(line)?.[1];
  if (!uri) throw new Error(`no NBD URI in the serve line: ${line}`);
  return {
    proc,
    uri,
    socket,
    logs,
    stdout,
    exited,
    dir,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const code = await exited;
      await rm(dir, { recursive: true, force: true });
      return code;
    },
  };
}
