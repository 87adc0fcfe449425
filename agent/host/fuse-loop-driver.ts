/**
 * The `fuse-loop` kind, for kernels without the nbd driver: nbdfuse (libnbd)
 * exposes the export as the file `<stateDir>/fuse/<volume>/disk`, and a loop
 * device turns that file into a block device. nbdfuse is not connected to
 * the agent's export but to a relay (relay.ts, `pagedisk fuse-relay`), the
 * agent's NBD client:
 *
 *   /dev/loopN -> FUSE file -> nbdfuse -> relay -> <socketDir>/<volume>.sock (agent)
 *
 * - The relay and nbdfuse run detached, each in its own session and process
 *   group, with their stderr in `<stateDir>/fuse/<volume>.relay.log` and
 *   `<volume>.log`: the agent dying (even by SIGKILL) leaves the binding in
 *   place and serving, and neither writes to a pipe nobody reads.
 * - The loop device uses direct I/O (no second copy of every block in the
 *   page cache; FUSE files accept O_DIRECT) and the request's block size as
 *   its logical sector size, as the nbd kind does; both work over FUSE.
 * - Unbinding is the reverse: `losetup -d`, `fusermount3 -u` (lazily when
 *   something still holds the file), then nbdfuse, which exits by itself
 *   once unmounted, is waited for and stopped if it does not, then the relay.
 *
 * Re-adoption after an agent restart: nbdfuse cannot be pointed at a new
 * socket, nor can a loop device change its backing file, so neither ever
 * talks to the agent. While no agent serves the export, the relay holds
 * the requests (up to 180 s); the next agent, asked to bind the same
 * attachment, finds the relay, nbdfuse, the mount and the loop device of
 * the earlier run alive, keeps them, and tells the relay (SIGHUP) that it
 * serves the export again; the relay connects and sends what it held. The
 * device keeps its /dev/loopN and a mounted filesystem sees a pause. A
 * binding that is not whole (a part died), or of another attachment, or
 * recorded before relays existed, is torn down and bound anew.
 *
 * nbdfuse's mount may live in another mount namespace than the agent's
 * (systemd gives each start of the unit a fresh one): whether it is mounted
 * is read from nbdfuse's own /proc/<pid>/mountinfo, and where the agent
 * cannot see it to unmount it, stopping nbdfuse unmounts it in its own.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, open, readFile, rm, rmdir, stat, watch } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "../log.ts";
import { type Binding, type CheckedRequest, bindingOf, type FuseMount, type RelayProcess } from "./binding.ts";
import type { DeviceDriver } from "./device-driver.ts";
import { BindError } from "./errors.ts";
import { isMountPoint, isMountPointOf, loopBackingFile, loopsBackedBy } from "./mounts.ts";
import { isSameProcess, processStartTime, stopProcess } from "./process.ts";
import type { RelaySpec } from "./relay.ts";
import { requireTool, runTool, said } from "./tools.ts";

/** nbdfuse and the relay connect and serve in well under a second; this is for a server that never answers. */
const READY_TIMEOUT_MS = 30_000;

/** Where one volume's fuse-loop binding lives in the state dir. */
export interface FusePaths {
  mountDir: string;
  file: string;
  pidfile: string;
  log: string;
  /** The relay's socket: named by a hash, so that a 128-character volume name fits in sun_path. */
  relaySocket: string;
  relayPidfile: string;
  relayLog: string;
}

export function fusePaths(stateDir: string, volume: string): FusePaths {
  const base = join(stateDir, "fuse");
  const mountDir = join(base, volume);
  const tag = createHash("sha256").update(volume).digest("hex").slice(0, 16);
  return {
    mountDir,
    file: join(mountDir, "disk"),
    pidfile: join(base, `${volume}.pid`),
    log: join(base, `${volume}.log`),
    relaySocket: join(base, `relay-${tag}.sock`),
    relayPidfile: join(base, `${volume}.relay.pid`),
    relayLog: join(base, `${volume}.relay.log`),
  };
}

/** The NBD URI of an export on a unix socket, as libnbd reads it. */
export function exportUri(socketPath: string, exportName: string): string {
  const socket = socketPath.split("/").map(encodeURIComponent).join("/");
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
}

/**
 * How to start `pagedisk fuse-relay`: the agent's own program. In the
 * bundle this module is the bundle itself; run from source, it is cli.ts.
 */
export function defaultRelayCommand(): string[] {
  const self = fileURLToPath(import.meta.url);
  const program = self.endsWith(".ts") ? join(dirname(self), "..", "cli.ts") : self;
  return [process.execPath, program, "fuse-relay"];
}

export interface FuseLoopOptions {
  /** The command that starts a relay, its JSON spec appended (default: defaultRelayCommand()). */
  relayCommand?: string[];
  /** How long a relay holds requests with no agent (default: the relay's, 180 s). */
  holdSeconds?: number;
}

export class FuseLoopDriver implements DeviceDriver {
  readonly kind = "fuse-loop" as const;
  readonly #stateDir: string;
  readonly #log: Logger;
  readonly #relayCommand: string[];
  readonly #holdSeconds: number | undefined;
  /** Exits of the processes this run started, by pid: an event beats polling /proc. */
  readonly #children = new Map<number, Promise<void>>();

  constructor(stateDir: string, log: Logger, opts: FuseLoopOptions = {}) {
    this.#stateDir = stateDir;
    this.#log = log;
    this.#relayCommand = opts.relayCommand ?? defaultRelayCommand();
    this.#holdSeconds = opts.holdSeconds;
  }

  async attach(
    req: CheckedRequest,
    _previous: Binding | null,
    record: (partial: Binding) => Promise<void>,
  ): Promise<Binding> {
    const losetup = requireTool("losetup", "mount");
    const paths = fusePaths(this.#stateDir, req.volume);
    // A crash between mounting and recording can leave a mount (and a relay) nobody recorded.
    await this.#teardown(paths, null);
    await mkdir(paths.mountDir, { recursive: true, mode: 0o700 });
    let relay: RelayProcess | null = null;
    let fuse: FuseMount;
    try {
      relay = await this.#startRelay(req, paths);
      fuse = { ...(await this.#mount(req, paths, relay)), relay };
    } catch (err) {
      await this.#teardown(paths, null, relay);
      throw err;
    }
    const pending = bindingOf(req, "fuse-loop", "", fuse);
    try {
      await record(pending);
      const size = (await stat(paths.file)).size;
      if (size !== req.sizeBytes) {
        throw new BindError("SIZE_MISMATCH", `export ${JSON.stringify(req.exportName)} has ${size} bytes, the volume ${req.sizeBytes}`);
      }
      const args = ["--find", "--show", "--direct-io=on", "--sector-size", String(req.blockSize)];
      if (req.readOnly) args.push("--read-only");
      const out = await runTool(losetup, [...args, paths.file]);
      const device = out.stdout.trim();
      if (out.code !== 0 || !/^\/dev\/loop\d+$/.test(device)) {
        throw new BindError("TOOL_FAILED", `losetup could not attach ${paths.file}: ${said(out)}`);
      }
      this.#log.info({ volume: req.volume, device, file: paths.file, pid: fuse.pid, relay: relay.pid }, "fuse-loop device bound");
      return bindingOf(req, "fuse-loop", device, fuse);
    } catch (err) {
      await this.detach(pending).catch((cleanup: unknown) =>
        this.#log.error({ err: cleanup, volume: req.volume }, "cleanup after a failed bind failed"),
      );
      throw err;
    }
  }

  /**
   * Keep a whole binding of an earlier run: its loop device, mount, nbdfuse
   * and relay all alive. The relay is told (SIGHUP) that the export is
   * served again, and sends it the requests it held meanwhile.
   */
  async adopt(_req: CheckedRequest, old: Binding): Promise<Binding | null> {
    const relay = old.fuse?.relay;
    if (!relay || !(await this.present(old))) return null;
    try {
      process.kill(relay.pid, "SIGHUP");
    } catch {
      return null; // gone in between
    }
    this.#log.info({ volume: old.volume, device: old.device, relay: relay.pid, nbdfuse: old.fuse!.pid }, "fuse-loop binding re-adopted");
    return old;
  }

  async detach(binding: Binding): Promise<void> {
    const paths = fusePaths(this.#stateDir, binding.volume);
    await this.#teardown(paths, binding.fuse ?? null, binding.fuse?.relay ?? null);
    if (binding.device) this.#log.info({ volume: binding.volume, device: binding.device }, "fuse-loop device unbound");
  }

  async present(binding: Binding): Promise<boolean> {
    const fuse = binding.fuse;
    if (!fuse || !binding.device) return false;
    const relay = fuse.relay;
    return (
      (await loopBackingFile(binding.device)) === fuse.file &&
      (await isSameProcess(fuse.pid, fuse.startTime)) &&
      (!relay || (await isSameProcess(relay.pid, relay.startTime))) &&
      (await isMountPointOf(fuse.pid, fuse.mountDir))
    );
  }

  /** Start the relay and wait until it serves (its pidfile appears) or fails. */
  async #startRelay(req: CheckedRequest, paths: FusePaths): Promise<RelayProcess> {
    if (Buffer.byteLength(paths.relaySocket) > 107) {
      throw new BindError("INVALID_REQUEST", `the state dir ${this.#stateDir} is too long for a unix socket path in it`);
    }
    const spec: RelaySpec = {
      listen: paths.relaySocket,
      upstream: req.socketPath,
      exportName: req.exportName,
      sizeBytes: req.sizeBytes,
      readOnly: req.readOnly,
      pidfile: paths.relayPidfile,
      ...(this.#holdSeconds !== undefined ? { holdSeconds: this.#holdSeconds } : {}),
    };
    const [command, ...args] = this.#relayCommand;
    const started = await this.#spawn(command!, [...args, JSON.stringify(spec)], paths.relayPidfile, paths.relayLog);
    if (started.outcome !== "ready") {
      const unreachable = /connect|refused|ENOENT|no such file|unknown export|closed/i.test(started.said);
      const mismatch = /bytes, the binding/.test(started.said);
      throw new BindError(
        mismatch ? "SIZE_MISMATCH" : unreachable ? "EXPORT_UNREACHABLE" : "TOOL_FAILED",
        started.outcome === "timeout"
          ? `the fuse relay did not serve ${req.socketPath} within ${READY_TIMEOUT_MS / 1000} s`
          : `the fuse relay could not serve ${exportUri(req.socketPath, req.exportName)}: ${started.said || "no message"}`,
      );
    }
    return { pid: started.pid, startTime: started.startTime, socket: paths.relaySocket };
  }

  /** Start nbdfuse on the relay's socket and wait until it serves the file (its pidfile appears) or fails. */
  async #mount(req: CheckedRequest, paths: FusePaths, relay: RelayProcess): Promise<FuseMount> {
    const nbdfuse = requireTool("nbdfuse", "libnbd-bin");
    const args = ["-P", paths.pidfile, "-C", String(req.connections)];
    if (req.readOnly) args.push("-r");
    args.push(paths.file, exportUri(relay.socket, req.exportName));
    const started = await this.#spawn(nbdfuse, args, paths.pidfile, paths.log);
    if (started.outcome !== "ready") {
      throw new BindError(
        "TOOL_FAILED",
        started.outcome === "timeout"
          ? `nbdfuse did not mount ${paths.file} within ${READY_TIMEOUT_MS / 1000} s`
          : `nbdfuse could not serve ${exportUri(relay.socket, req.exportName)}: ${started.said || "no message"}`,
      );
    }
    return { mountDir: paths.mountDir, file: paths.file, pid: started.pid, startTime: started.startTime };
  }

  /**
   * Spawn a helper detached (its own session, so neither a signal to the
   * agent's process group nor the agent's exit reaches it), stderr to
   * `log`, and wait until it writes `pidfile`. Whatever does not get ready
   * is killed and reaped.
   */
  async #spawn(
    command: string,
    args: string[],
    pidfile: string,
    log: string,
  ): Promise<{ outcome: "ready"; pid: number; startTime: number } | { outcome: "exited" | "timeout"; said: string }> {
    await rm(pidfile, { force: true });
    const logFile = await open(log, "w", 0o600);
    let child: ChildProcess;
    try {
      child = spawn(command, args, { detached: true, stdio: ["ignore", "ignore", logFile.fd] });
    } finally {
      await logFile.close();
    }
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    child.unref();
    const pid = child.pid;
    const outcome = pid === undefined ? "exited" : await ready(pidfile, exited);
    const startTime = pid === undefined ? null : await processStartTime(pid);
    if (outcome === "ready" && pid !== undefined && startTime !== null) {
      this.#children.set(pid, exited);
      void exited.then(() => this.#children.delete(pid));
      return { outcome, pid, startTime };
    }
    if (pid !== undefined) child.kill("SIGKILL");
    await exited;
    const text = (await readFile(log, "utf8").catch(() => "")).trim();
    await rm(pidfile, { force: true });
    return { outcome: outcome === "timeout" ? "timeout" : "exited", said: lastWords(text) };
  }

  /**
   * Remove whatever is left of a volume's binding, in this order: loop
   * devices, the mount, nbdfuse, the relay, files. Without a record of the
   * relay (a crash before it was recorded), the one its pidfile names is
   * stopped if it is still that relay.
   */
  async #teardown(paths: FusePaths, fuse: FuseMount | null, relay: RelayProcess | null = null): Promise<void> {
    for (const loop of await loopsBackedBy(paths.file)) {
      const losetup = requireTool("losetup", "mount");
      const out = await runTool(losetup, ["-d", loop]);
      if (out.code !== 0 && (await loopBackingFile(loop)) === paths.file) {
        throw new BindError("TOOL_FAILED", `losetup -d ${loop} failed: ${said(out)}`);
      }
      // With the device still open (a mounted filesystem) the kernel detaches it on last close.
      if ((await loopBackingFile(loop)) === paths.file) {
        this.#log.warn({ device: loop }, "loop device busy: it goes away when its last user closes it");
      }
    }
    if (await isMountPoint(paths.mountDir)) {
      const fusermount = requireTool("fusermount3", "fuse3");
      const out = await runTool(fusermount, ["-u", paths.mountDir]);
      if (out.code !== 0 && (await isMountPoint(paths.mountDir))) {
        this.#log.warn({ mountDir: paths.mountDir, said: said(out) }, "FUSE mount busy: unmounting lazily");
        const lazy = await runTool(fusermount, ["-u", "-z", paths.mountDir]);
        if (lazy.code !== 0 && (await isMountPoint(paths.mountDir))) {
          throw new BindError("TOOL_FAILED", `fusermount3 -u -z ${paths.mountDir} failed: ${said(lazy)}`);
        }
      }
    }
    // Mounted in another mount namespace, nbdfuse unmounts it there when it is stopped.
    if (fuse) await stopProcess(fuse.pid, fuse.startTime, { exited: this.#children.get(fuse.pid) });
    const relayLeft = relay ?? (await this.#unrecordedRelay(paths));
    // The relay lets the agent's answers to what it sent arrive, then exits.
    if (relayLeft) {
      await stopProcess(relayLeft.pid, relayLeft.startTime, { exited: this.#children.get(relayLeft.pid), terminate: true });
    }
    await rm(paths.pidfile, { force: true });
    await rm(paths.log, { force: true });
    await rm(paths.relayPidfile, { force: true });
    await rm(paths.relayLog, { force: true });
    await rm(paths.relaySocket, { force: true });
    await rmdir(paths.mountDir).catch(() => {});
  }

  /** The relay the pidfile names, if that pid is still a relay serving this volume's socket. */
  async #unrecordedRelay(paths: FusePaths): Promise<RelayProcess | null> {
    const pid = Number((await readFile(paths.relayPidfile, "utf8").catch(() => "")).trim());
    if (!Number.isSafeInteger(pid) || pid <= 0) return null;
    const argv = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    const startTime = await processStartTime(pid);
    if (startTime === null || !argv.includes("fuse-relay") || !argv.includes(paths.relaySocket)) return null;
    return { pid, startTime, socket: paths.relaySocket };
  }
}

/** The last lines a helper wrote, on one line; JSON log records reduced to their messages. */
function lastWords(text: string): string {
  const lines = text.split("\n").filter(Boolean).slice(-5);
  return lines
    .map((line) => {
      try {
        const r = JSON.parse(line) as { msg?: string; err?: { message?: string } };
        return [r.msg, r.err?.message].filter(Boolean).join(": ");
      } catch {
        return line;
      }
    })
    .join("; ")
    .replace(/\s*\n\s*/g, "; ");
}

/**
 * Resolves "ready" when a helper has written its pid to `pidfile` (nbdfuse
 * does once the mount serves, the relay once it listens), woken by
 * directory events rather than polling; "exited" if it exits first,
 * "timeout" if neither happens in time.
 */
async function ready(pidfile: string, exited: Promise<void>): Promise<"ready" | "exited" | "timeout"> {
  const stop = new AbortController();
  const written = () => existsSync(pidfile) && /^\d+\s*$/.test(readFileSync(pidfile, "utf8"));
  const watcher = watch(dirname(pidfile), { signal: stop.signal });
  const appeared = (async () => {
    // Checked once the watcher exists, so a pidfile written in between is not missed.
    if (written()) return "ready" as const;
    for await (const _ of watcher) if (written()) return "ready" as const;
    return "timeout" as const;
  })().catch(() => "timeout" as const);
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), READY_TIMEOUT_MS);
  });
  try {
    return await Promise.race([appeared, exited.then(() => (written() ? "ready" : "exited") as "ready" | "exited"), expired]);
  } finally {
    clearTimeout(timer);
    stop.abort();
  }
}
