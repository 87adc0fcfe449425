/**
 * The agent as users run it: `node dist/pagedisk.mjs agent run ...` as a
 * child process, its JSON logs collected, and waits on log records (events
 * the agent itself announces: "report recorded" for each report the
 * control plane took) instead of sleeps; and one write through an export
 * it serves.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { BIN } from "../harness/serve.ts";
import { CMD, FLAG, RawClient } from "../nbd/raw-client.ts";

export type LogRecord = Record<string, unknown> & { msg?: string };

export interface AgentProcess {
  proc: ChildProcess;
  logs: LogRecord[];
  stdout: string[];
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  /** The first log record from now on (or already seen since `from`) that matches. */
  waitForLog(match: (r: LogRecord) => boolean, from?: number): Promise<LogRecord>;
  /** A report the control plane recorded whose volume list satisfies `match` (entries are `name:epoch:STATE`). */
  waitForReport(match: (volumes: string[]) => boolean, from?: number): Promise<LogRecord>;
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

/** Start `agent run` and resolve once it prints its running line. */
export async function startAgent(args: string[], env: NodeJS.ProcessEnv = {}): Promise<AgentProcess> {
  const proc = spawn(process.execPath, [BIN, "agent", "run", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "", PAGEDISK_LOG_LEVEL: "debug", ...env },
  });
  const logs: LogRecord[] = [];
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: proc.stderr! }).on("line", (line) => {
    stderr.push(line);
    try {
      logs.push(JSON.parse(line) as LogRecord);
    } catch {
      // not JSON: kept in stderr for messages
    }
    for (const w of waiters) w();
  });
  const exited = new Promise<number | string>((res) => {
    proc.on("exit", (code, signal) => {
      res(code ?? signal ?? -1);
      for (const w of waiters) w();
    });
  });
  const tail = () => stderr.slice(-30).join("\n");

  function waitForLog(match: (r: LogRecord) => boolean, from = 0): Promise<LogRecord> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = logs.slice(from).find(match);
        if (found) {
          waiters.delete(check);
          resolve(found);
        } else if (proc.exitCode !== null || proc.signalCode !== null) {
          waiters.delete(check);
          reject(new Error(`agent exited before the awaited log line:\n${tail()}`));
        }
      };
      waiters.add(check);
      check();
    });
  }

  const running = new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      stdout.push(line);
      if (line.includes("running")) resolve();
    });
    exited.then((code) => reject(new Error(`agent exited (${code}) before running:\n${tail()}`)));
  });
  await running;
  return {
    proc,
    logs,
    stdout,
    exited,
    waitForLog,
    waitForReport: (match, from) =>
      waitForLog((r) => r.msg === "report recorded" && match(r.volumes as string[]), from),
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** One FUA write through the export `volume` on `socket`; resolves with the NBD error (0 = ok). */
export async function nbdWrite(socket: string, volume: string, offset: number, data: Buffer): Promise<number> {
  const client = await RawClient.connect(socket);
  try {
    await client.handshake(volume);
    const reply = await client.request({ type: CMD.WRITE, handle: 1n, offset, flags: FLAG.FUA, payload: data });
    return reply.error;
  } finally {
    client.close();
  }
}
