/**
 * The `fuse-loop` kind, for kernels without the nbd driver: nbdfuse (libnbd)
 * exposes the export as the file `<stateDir>/fuse/<volume>/disk`, and a loop
 * device turns that file into a block device.
 *
 * - nbdfuse runs detached, in its own process group, with its stderr in
 *   `<stateDir>/fuse/<volume>.log`: the agent dying (even by SIGKILL) leaves
 *   the binding in place and visible for the next run, and nbdfuse never
 *   writes to a pipe nobody reads.
 * - The loop device uses direct I/O (no second copy of every block in the
 *   page cache; FUSE files accept O_DIRECT) and the request's block size as
 *   its logical sector size, as the nbd kind does; both work over FUSE.
 * - Unbinding is the reverse: `losetup -d`, `fusermount3 -u` (lazily when
 *   something still holds the file), then nbdfuse, which exits by itself
 *   once unmounted, is waited for and stopped if it does not.
 *
 * Re-adoption after an agent restart: the agent's NBD server died with it,
 * so nbdfuse's connections are dead, and nbdfuse cannot be pointed at a new
 * socket; nor can a loop device change its backing file. A volume bound by
 * an earlier run is therefore torn down and bound anew. The consequence:
 * the device path of a fuse-loop binding may change after an agent restart
 * (another /dev/loopN), and anything holding the old device (a mounted
 * filesystem) sees I/O errors and must be reopened on the new one. An nbd
 * binding keeps its /dev/nbdN.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, open, readFile, rm, rmdir, stat, watch } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Logger } from "../log.ts";
import { type Binding, type CheckedRequest, bindingOf, type FuseMount } from "./binding.ts";
import type { DeviceDriver } from "./device-driver.ts";
import { BindError } from "./errors.ts";
import { isMountPoint, loopBackingFile, loopsBackedBy } from "./mounts.ts";
import { isSameProcess, processStartTime, stopProcess } from "./process.ts";
import { requireTool, runTool, said } from "./tools.ts";

/** nbdfuse connects and mounts in well under a second; this is for a server that never answers. */
const READY_TIMEOUT_MS = 30_000;

/** Where one volume's fuse-loop binding lives in the state dir. */
export interface FusePaths {
  mountDir: string;
  file: string;
  pidfile: string;
  log: string;
}

export function fusePaths(stateDir: string, volume: string): FusePaths {
  const base = join(stateDir, "fuse");
  const mountDir = join(base, volume);
  return {
    mountDir,
    file: join(mountDir, "disk"),
    pidfile: join(base, `${volume}.pid`),
    log: join(base, `${volume}.log`),
  };
}

/** The NBD URI of an export on a unix socket, as libnbd reads it. */
export function exportUri(socketPath: string, exportName: string): string {
  const socket = socketPath.split("/").map(encodeURIComponent).join("/");
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
}

export class FuseLoopDriver implements DeviceDriver {
  readonly kind = "fuse-loop" as const;
  readonly #stateDir: string;
  readonly #log: Logger;
  /** Exits of the nbdfuse processes this run started, by pid: an event beats polling /proc. */
  readonly #children = new Map<number, Promise<void>>();

  constructor(stateDir: string, log: Logger) {
    this.#stateDir = stateDir;
    this.#log = log;
  }

  async attach(
    req: CheckedRequest,
    _previous: Binding | null,
    record: (partial: Binding) => Promise<void>,
  ): Promise<Binding> {
    const losetup = requireTool("losetup", "mount");
    const paths = fusePaths(this.#stateDir, req.volume);
    // A crash between mounting and recording can leave a mount nobody recorded.
    await this.#teardown(paths, null);
    await mkdir(paths.mountDir, { recursive: true, mode: 0o700 });
    const fuse = await this.#mount(req, paths);
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
      this.#log.info({ volume: req.volume, device, file: paths.file, pid: fuse.pid }, "fuse-loop device bound");
      return bindingOf(req, "fuse-loop", device, fuse);
    } catch (err) {
      await this.detach(pending).catch((cleanup: unknown) =>
        this.#log.error({ err: cleanup, volume: req.volume }, "cleanup after a failed bind failed"),
      );
      throw err;
    }
  }

  async detach(binding: Binding): Promise<void> {
    const paths = fusePaths(this.#stateDir, binding.volume);
    await this.#teardown(paths, binding.fuse ?? null);
    if (binding.device) this.#log.info({ volume: binding.volume, device: binding.device }, "fuse-loop device unbound");
  }

  async present(binding: Binding): Promise<boolean> {
    const fuse = binding.fuse;
    if (!fuse || !binding.device) return false;
    return (
      (await loopBackingFile(binding.device)) === fuse.file &&
      (await isSameProcess(fuse.pid, fuse.startTime)) &&
      (await isMountPoint(fuse.mountDir))
    );
  }

  /** Start nbdfuse and wait until it serves the file (its pidfile appears) or fails. */
  async #mount(req: CheckedRequest, paths: FusePaths): Promise<FuseMount> {
    const nbdfuse = requireTool("nbdfuse", "libnbd-bin");
    await rm(paths.pidfile, { force: true });
    const args = ["-P", paths.pidfile, "-C", String(req.connections)];
    if (req.readOnly) args.push("-r");
    args.push(paths.file, exportUri(req.socketPath, req.exportName));
    const log = await open(paths.log, "w", 0o600);
    let child: ChildProcess;
    try {
      // Detached: its own process group, so a signal to the agent's group spares it.
      child = spawn(nbdfuse, args, { detached: true, stdio: ["ignore", "ignore", log.fd] });
    } finally {
      await log.close();
    }
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    child.unref();
    const pid = child.pid;
    const outcome = pid === undefined ? "exited" : await ready(paths.pidfile, exited);
    const startTime = pid === undefined ? null : await processStartTime(pid);
    if (outcome !== "ready" || pid === undefined || startTime === null) {
      if (pid !== undefined && outcome === "timeout") child.kill("SIGKILL");
      await exited;
      const said = (await readFile(paths.log, "utf8").catch(() => "")).trim().replace(/\s*\n\s*/g, "; ");
      await this.#teardown(paths, null);
      const unreachable = /connect|export|handshake|refused|No such file|reset by peer/i.test(said);
      throw new BindError(
        unreachable ? "EXPORT_UNREACHABLE" : "TOOL_FAILED",
        outcome === "timeout"
          ? `nbdfuse did not mount ${paths.file} within ${READY_TIMEOUT_MS / 1000} s`
          : `nbdfuse could not serve ${exportUri(req.socketPath, req.exportName)}: ${said || "no message"}`,
      );
    }
    this.#children.set(pid, exited);
    void exited.then(() => this.#children.delete(pid));
    return { mountDir: paths.mountDir, file: paths.file, pid, startTime };
  }

  /** Remove whatever is left of a volume's binding: loop devices, the mount, nbdfuse, files. */
  async #teardown(paths: FusePaths, fuse: FuseMount | null): Promise<void> {
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
    if (fuse) await stopProcess(fuse.pid, fuse.startTime, { exited: this.#children.get(fuse.pid) });
    await rm(paths.pidfile, { force: true });
    await rm(paths.log, { force: true });
    await rmdir(paths.mountDir).catch(() => {});
  }
}

/**
 * Resolves "ready" when nbdfuse has written its pid to `pidfile` (it does
 * once the mount serves), woken by directory events rather than polling;
 * "exited" if it exits first, "timeout" if neither happens in time.
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
