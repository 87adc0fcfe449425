/**
 * One volume the control plane gave this node, as the agent serves it:
 *
 *   page blob(s): each replica's SAS URL, the lease id on every write
 *   -> engine (openReplicatedVolume, one replica or several)
 *   -> NBD export on <socketDir>/<volume>.sock (0600)
 *   -> kernel binding (/dev/nbdX, or nbdfuse + loop)
 *
 * States: SERVING (DEGRADED while a replica it was given is not ONLINE) ->
 * FAILED (the engine failed it: lease lost, blob gone, deadline, the last
 * online replica lost) or STOPPED (detached). A FAILED volume has no export
 * and no binding; it stays reported until the desired state drops it or
 * hands a new epoch. The agent never takes, releases or breaks a lease: the
 * control plane owns them, and a failed or detached volume simply stops
 * writing.
 *
 * Every volume, one replica included, is served through the replica layer
 * (served-replicas.ts opens the replicas): `update()` carries out, on the
 * same attachment, what the control plane decides (resync, rebuild, retire,
 * stop writing one), so raising the replica count from one is a rebuild on
 * the running export and kernel device, never a reopen.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { REPLICAS_DIVERGED } from "../../contract/signals.ts";
import type { DesiredAttachment, ReportedEvent, VolumeReport } from "../../contract/node.ts";
import type { VolumeFailedEvent } from "../engine/failure.ts";
import { StatsWindow } from "../engine/stats-window.ts";
import type { VolumeMetrics } from "../engine/volume.ts";
import type { Logger } from "../log.ts";
import { StorageError } from "../pageblob/errors.ts";
import type { VolumeExport } from "../serve/export.ts";
import type { KernelBinder } from "../host/binding.ts";
import type { ReplicaStatus } from "../status/source.ts";
import { NoUsableReplica, ServedReplicas } from "./served-replicas.ts";

export type ServingState = VolumeReport["state"];

export interface ServeContext {
  node: string;
  /** Directory of the export sockets (created 0700). */
  socketDir: string;
  /** Directory of the dirty-region logs (`<dir>/<volume>/...`). */
  dirtyDir: string;
  /** Bytes per dirty-log bit; the engine's default when undefined. */
  dirtyGranularity?: number | undefined;
  /** Undefined: exports only, no kernel device (`--kernel none`). */
  binder: KernelBinder | undefined;
  log: Logger;
  /** An event for the control plane (queued for the next report). */
  report(event: ReportedEvent): void;
}

/** Why a desired attachment is not served; reported as FAILED with this message. */
export function refusal(want: DesiredAttachment): string | undefined {
  const online = want.replicas.filter((r) => r.state === "ONLINE");
  if (online.length === 0) return `volume ${want.volume} has no online replica`;
  if (!online.some((r) => r.url !== null)) {
    return `the pool of volume ${want.volume} cannot sign a SAS for its replica (a SAS connection string?)`;
  }
  return undefined;
}

export class ServedVolume {
  readonly name: string;
  readonly epoch: number;
  readonly leaseId: string;
  readonly sizeBytes: number;
  readonly socket: string;
  #state: ServingState;
  #device: string | null = null;
  #export: VolumeExport | undefined;
  /** Report statistics: each report that carries them closes one window. */
  #stats: StatsWindow | undefined;
  /** What serves the replicas; undefined until opened (and when refused). */
  #set: ServedReplicas | undefined;
  #ended: Promise<void> | undefined;
  readonly #ctx: ServeContext;

  private constructor(want: DesiredAttachment, ctx: ServeContext, state: ServingState) {
    this.name = want.volume;
    this.epoch = want.epoch;
    this.leaseId = want.leaseId;
    this.sizeBytes = want.sizeBytes;
    this.socket = join(ctx.socketDir, `${want.volume}.sock`);
    this.#state = state;
    this.#ctx = ctx;
  }

  /**
   * A desired attachment the agent will not serve (see `refusal()`): it is
   * reported FAILED with an event saying why, and never opened.
   */
  static refused(want: DesiredAttachment, ctx: ServeContext, message: string): ServedVolume {
    const v = new ServedVolume(want, ctx, "FAILED");
    v.#refuse(want, message);
    return v;
  }

  #refuse(want: DesiredAttachment, message: string): void {
    this.#state = "FAILED";
    this.#ctx.log.error({ volume: want.volume, epoch: want.epoch }, message);
    this.#ctx.report({ type: "volume-failed", volume: want.volume, message, data: { epoch: want.epoch } });
  }

  /**
   * Open and serve `want`. A fatal storage answer (lease lost, blob gone,
   * SAS refused) gives a FAILED volume with its event; anything else
   * (control plane or storage unreachable, a socket in use) rejects, for the
   * next reconcile pass to try again.
   */
  static async attach(want: DesiredAttachment, ctx: ServeContext): Promise<ServedVolume> {
    const v = new ServedVolume(want, ctx, "SERVING");
    const log = ctx.log.child({ volume: want.volume, epoch: want.epoch });
    await mkdir(ctx.socketDir, { recursive: true, mode: 0o700 });
    const opened = await v.#open(want, log);
    if (!opened) return v;
    const volume = opened.volume;
    v.#stats = new StatsWindow(() => volume.metrics());
    // The engine may have failed the volume between open and here.
    if (v.#state === "FAILED") return v;
    if (ctx.binder) {
      try {
        const binding = await ctx.binder.bind({
          volume: want.volume,
          socketPath: v.socket,
          exportName: want.volume,
          sizeBytes: want.sizeBytes,
          identifier: `pagedisk:${ctx.node}:${want.volume}:${want.epoch}`,
        });
        v.#device = binding?.device ?? null;
      } catch (err) {
        await opened.drain();
        throw err;
      }
    }
    log.info({ socket: v.socket, device: v.#device, replicas: want.replicas.length }, "volume serving");
    // What the control plane asked of the replicas beyond serving them (resync, rebuild).
    v.#set?.update(want);
    return v;
  }

  /** Every replica the control plane listed, through ServedReplicas. */
  async #open(want: DesiredAttachment, log: Logger): Promise<VolumeExport | undefined> {
    const ctx = this.#ctx;
    try {
      this.#set = await ServedReplicas.open(want, {
        node: ctx.node,
        socket: this.socket,
        dirtyDir: join(ctx.dirtyDir, want.volume),
        ...(ctx.dirtyGranularity !== undefined ? { dirtyGranularity: ctx.dirtyGranularity } : {}),
        log,
        report: (event) => ctx.report(event),
        onFailed: (event) => this.#failed(event),
      });
      this.#export = this.#set.export;
      return this.#export;
    } catch (err) {
      return this.#openFailed(want, err);
    }
  }

  /** An open that threw: FAILED when the storage said no for good, else rethrown for a retry. */
  #openFailed(want: DesiredAttachment, err: unknown): undefined {
    // The engine failed it while loading its page map: already reported.
    if (this.#state === "FAILED") return undefined;
    if ((err instanceof StorageError && err.fatal) || err instanceof NoUsableReplica) {
      this.#refuse(want, `volume ${want.volume} cannot be opened: ${err.message}`);
      return undefined;
    }
    throw err;
  }

  get state(): ServingState {
    if (this.#state === "SERVING" && this.#set?.degraded()) return "DEGRADED";
    return this.#state;
  }

  get device(): string | null {
    return this.#device;
  }

  /**
   * Whether `want` is still this attachment (same epoch and lease); else
   * detach and attach again. Any change of its replicas is an update.
   */
  matches(want: DesiredAttachment): boolean {
    return want.epoch === this.epoch && want.leaseId === this.leaseId;
  }

  /**
   * The same attachment, desired again: put the fresh SAS of every replica
   * into the running volume (no reopen, the next request uses it), start
   * what the control plane asks (resync, rebuild, stop writing one) and stop
   * using those it no longer lists.
   */
  update(want: DesiredAttachment): void {
    if (this.#state === "SERVING") this.#set?.update(want);
  }

  /** No longer desired: unbind, drain and flush the export, close. */
  detach(): Promise<void> {
    this.#ended ??= (async () => {
      this.#ctx.log.info({ volume: this.name, epoch: this.epoch }, "volume draining");
      // The kernel device goes first: unbinding flushes its dirty pages through the export.
      await this.#unbind();
      const flushError = await this.#export?.drain();
      if (flushError) this.#ctx.log.error({ volume: this.name, err: flushError }, "final flush failed");
      await this.#set?.close(!flushError && this.#state === "SERVING");
      if (this.#state === "SERVING") this.#state = "STOPPED";
      this.#ctx.log.info({ volume: this.name, epoch: this.epoch }, "volume detached");
    })();
    return this.#ended;
  }

  /**
   * The agent stops (SIGTERM): drain and flush the export, but keep the
   * kernel binding recorded, for the next agent to adopt.
   */
  async stop(): Promise<void> {
    await this.#ended;
    const flushError = await this.#export?.drain();
    if (flushError) this.#ctx.log.error({ volume: this.name, err: flushError }, "final flush failed");
    await this.#set?.close(!flushError && this.#state === "SERVING");
  }

  /**
   * The volume for a report; with `withStats` its statistics since the
   * last report that carried them, which closes their window.
   */
  report(withStats: boolean): VolumeReport {
    return {
      volume: this.name,
      epoch: this.epoch,
      state: this.state,
      // A report's replicas name no pool: the control plane knows it.
      replicas: this.replicas().map(({ pool: _pool, ...r }) => r),
      ...(this.#device ? { device: this.#device } : {}),
      ...(withStats && this.#stats ? { stats: this.#stats.take() } : {}),
    };
  }

  /**
   * Every replica the agent was given, as it uses them now. A volume that
   * is not serving says nothing of its replicas: a failed writer's view is
   * no news about them, and reporting them all OFFLINE would have the
   * control plane take every one out.
   */
  replicas(): ReplicaStatus[] {
    if (this.#state !== "SERVING") return [];
    return this.#set?.reports() ?? [];
  }

  /** Counters of the engine; undefined when never opened. */
  metrics(): VolumeMetrics | undefined {
    return this.#export?.volume.metrics();
  }

  #failed(event: VolumeFailedEvent): void {
    if (this.#state === "FAILED") return;
    this.#state = "FAILED";
    const ctx = this.#ctx;
    ctx.log.error({ ...event, volume: this.name, epoch: this.epoch }, "volume failed");
    ctx.report({
      type: "volume-failed",
      volume: this.name,
      message: `volume ${this.name} failed on node ${ctx.node}: ${event.message}`.slice(0, 1024),
      data: {
        epoch: this.epoch,
        reason: event.reason,
        code: event.code,
        status: event.status,
        ...(event.azureCode ? { azureCode: event.azureCode } : {}),
      },
    });
    // Every request already gets EIO; the export and the device go away.
    this.#ended ??= (async () => {
      await this.#export?.fail();
      await this.#unbind();
      await this.#set?.close(false);
      // Writes that reached some replicas only, when the volume was taken away mid-write:
      // the control plane has them copied from one (functions/health/diverged.ts).
      if (this.#set?.diverged()) {
        ctx.log.warn({ volume: this.name, epoch: this.epoch }, "replicas may differ");
        ctx.report({
          type: REPLICAS_DIVERGED,
          volume: this.name,
          message: `volume ${this.name}: writes in flight when it failed on node ${ctx.node} reached some replicas only`,
          data: { epoch: this.epoch },
        });
      }
    })();
  }

  async #unbind(): Promise<void> {
    if (!this.#ctx.binder) return;
    try {
      await this.#ctx.binder.unbind(this.name);
    } catch (err) {
      this.#ctx.log.error({ volume: this.name, err }, "kernel unbind failed");
    }
    this.#device = null;
  }
}
