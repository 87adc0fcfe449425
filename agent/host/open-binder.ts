/**
 * Entry of agent/host: pick the kind of binding this host supports and
 * open a binder of that kind on the state dir.
 *
 * ```ts
 * const binder = await openBinder({ stateDir: "/var/lib/pagedisk", log });
 * for (const b of await binder.recorded()) ...   // what the last run left
 * const binding = await binder.bind({ volume, socketPath, exportName, sizeBytes, identifier });
 * await binder.unbind(volume);
 * ```
 */
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { availableParallelism } from "node:os";
import type { Logger } from "../log.ts";
import { type BindRequest, checkBindRequest, type KernelBinder, MAX_CONNECTIONS } from "./binding.ts";
import { Binder } from "./binder.ts";
import { BindError } from "./errors.ts";
import { FuseLoopDriver, type FuseLoopOptions } from "./fuse-loop-driver.ts";
import { NbdDriver } from "./nbd-driver.ts";
import { findTool, runTool } from "./tools.ts";

export type BinderMode = "auto" | "nbd" | "fuse" | "none";

export interface OpenBinderOptions {
  /** Root-only directory for records, FUSE mounts and logs; created 0700. */
  stateDir: string;
  /**
   * auto: nbd when the kernel has the nbd driver, else fuse-loop when its
   * tools are there, else an error naming what is missing. "none" binds
   * nothing (the daemon serves sockets only).
   */
  mode?: BinderMode;
  /** Connections per device at most; the default is one per CPU up to this (8). */
  maxConnections?: number;
  /** fuse-loop: how to start `pagedisk fuse-relay` (default: this program) and how long it holds requests. */
  fuse?: FuseLoopOptions;
  log: Logger;
}

const DEFAULT_MAX_CONNECTIONS = 8;

/** What the host offers for each kind of binding. */
export interface HostSupport {
  nbdDriver: boolean;
  nbdClient: boolean;
  nbdfuse: boolean;
  losetup: boolean;
  fusermount3: boolean;
  devFuse: boolean;
}

/** The kind `mode` resolves to on a host with `support`, or DRIVER_MISSING naming what is absent. */
export function chooseKind(mode: Exclude<BinderMode, "none">, support: HostSupport): "nbd" | "fuse-loop" {
  const nbdMissing = [
    support.nbdDriver ? null : "the nbd kernel module (modprobe nbd)",
    support.nbdClient ? null : "nbd-client (apt-get install nbd-client)",
  ].filter((m): m is string => m !== null);
  const fuseMissing = [
    support.nbdfuse ? null : "nbdfuse (apt-get install libnbd-bin)",
    support.losetup ? null : "losetup (apt-get install mount)",
    support.fusermount3 ? null : "fusermount3 (apt-get install fuse3)",
    support.devFuse ? null : "/dev/fuse (modprobe fuse)",
  ].filter((m): m is string => m !== null);
  if (mode === "nbd" || (mode === "auto" && nbdMissing.length === 0)) {
    if (nbdMissing.length > 0) {
      throw new BindError("DRIVER_MISSING", `cannot bind with nbd: missing ${nbdMissing.join(", ")}`);
    }
    return "nbd";
  }
  if (fuseMissing.length === 0) return "fuse-loop";
  if (mode === "fuse") {
    throw new BindError("DRIVER_MISSING", `cannot bind with nbdfuse and a loop device: missing ${fuseMissing.join(", ")}`);
  }
  throw new BindError(
    "DRIVER_MISSING",
    `no way to bind exports to block devices: nbd needs ${nbdMissing.join(", ")}; ` +
      `the fuse-loop fallback needs ${fuseMissing.join(", ")} (or run with binding "none")`,
  );
}

/** Look at this host; loads the nbd module when asked for nbd (or auto) and it is not loaded. */
export async function probeHost(loadNbd: boolean): Promise<HostSupport> {
  let nbdDriver = existsSync("/sys/module/nbd");
  const modprobe = findTool("modprobe");
  if (!nbdDriver && loadNbd && modprobe) {
    nbdDriver = (await runTool(modprobe, ["nbd"])).code === 0 && existsSync("/sys/module/nbd");
  }
  return {
    nbdDriver,
    nbdClient: findTool("nbd-client") !== null,
    nbdfuse: findTool("nbdfuse") !== null,
    losetup: findTool("losetup") !== null,
    fusermount3: findTool("fusermount3") !== null,
    devFuse: existsSync("/dev/fuse"),
  };
}

export async function openBinder(opts: OpenBinderOptions): Promise<KernelBinder> {
  const mode = opts.mode ?? "auto";
  const max = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  if (!Number.isInteger(max) || max < 1 || max > MAX_CONNECTIONS) {
    throw new BindError("INVALID_REQUEST", `maxConnections ${String(max)} must be an integer from 1 to ${MAX_CONNECTIONS}`);
  }
  const defaultConnections = Math.min(availableParallelism(), max);
  if (mode === "none") return new NoBinder(defaultConnections);
  const kind = chooseKind(mode, await probeHost(mode !== "fuse"));
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  const log = opts.log.child({ component: "binder", kind });
  const drivers = { nbd: new NbdDriver(log), "fuse-loop": new FuseLoopDriver(opts.stateDir, log, opts.fuse) };
  log.info({ stateDir: opts.stateDir, defaultConnections }, "kernel binder open");
  return new Binder(kind, drivers, { stateDir: opts.stateDir, defaultConnections, log });
}

/** Binding "none": requests are still checked, nothing is bound. */
class NoBinder implements KernelBinder {
  readonly kind = "none" as const;
  readonly #defaultConnections: number;

  constructor(defaultConnections: number) {
    this.#defaultConnections = defaultConnections;
  }

  async bind(req: BindRequest): Promise<null> {
    checkBindRequest(req, this.#defaultConnections);
    return null;
  }

  async unbind(): Promise<void> {}

  async recorded(): Promise<[]> {
    return [];
  }

  async close(): Promise<void> {}
}
