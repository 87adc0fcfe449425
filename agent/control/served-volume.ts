/**
 * One volume the control plane gave this node, as the agent serves it:
 *
 *   page blob (the replica's SAS URL, the lease id on every write)
 *   -> engine (openVolume) -> NBD export on <socketDir>/<volume>.sock (0600)
 *   -> kernel binding (/dev/nbdX, or nbdfuse + loop)
 *
 * States: SERVING -> FAILED (the engine failed it: lease lost, blob gone,
 * deadline) or STOPPED (detached). A FAILED volume has no export and no
 * binding; it stays reported until the desired state drops it or hands a
 * new epoch. The agent never takes, releases or breaks a lease: the control
 * plane owns them, and a failed or detached volume simply stops writing.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { DesiredAttachment, ReportedEvent, VolumeReport } from "../../contract/node.ts";
import { PageBlobBackend } from "../engine/pageblob-backend.ts";
import type { VolumeFailedEvent } from "../engine/failure.ts";
import { StatsWindow } from "../engine/stats-window.ts";
import type { VolumeMetrics } from "../engine/volume.ts";
import type { Logger } from "../log.ts";
import { StorageError } from "../pageblob/errors.ts";
import { parseBlobUrl } from "../pageblob/location.ts";
import { PageBlob } from "../pageblob/page-blob.ts";
import { ReplaceableSas } from "../pageblob/sas.ts";
import { BlobTransport } from "../pageblob/transport.ts";
import { exportVolume, type VolumeExport } from "../serve/export.ts";
import type { KernelBinder } from "../host/binding.ts";

export type ServingState = VolumeReport["state"];

export interface ServeContext {
  node: string;
  /** Directory of the export sockets (created 0700). */
  socketDir: string;
  /** Undefined: exports only, no kernel device (`--kernel none`). */
  binder: KernelBinder | undefined;
  log: Logger;
  /** An event for the control plane (queued for the next heartbeat). */
  report(event: ReportedEvent): void;
}

/** Why a desired attachment is not served; reported as FAILED with this message. */
export function refusal(want: DesiredAttachment): string | undefined {
  const online = want.replicas.filter((r) => r.state === "ONLINE");
  if (online.length > 1) {
    return `volume ${want.volume} has ${online.length} online replicas: serving more than one replica arrives with issue 5; not served, to never write one replica only`;
  }
  if (online.length === 0) return `volume ${want.volume} has no online replica`;
  if (online[0]!.url === null) {
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
  /** Heartbeat statistics: each report() closes one window. */
  #stats: StatsWindow | undefined;
  /** The SAS of the one replica served, replaced in place on refresh. */
  #sas: ReplaceableSas | undefined;
  #replicaId: string | undefined;
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
    ctx.log.error({ volume: want.volume, epoch: want.epoch }, message);
    ctx.report({ type: "volume-failed", volume: want.volume, message, data: { epoch: want.epoch } });
    return v;
  }

  /**
   * Open and serve `want`. A fatal storage answer (lease lost, blob gone,
   * SAS refused) gives a FAILED volume with its event; anything else
   * (control plane or storage unreachable, a socket in use) rejects, for the
   * next reconcile pass to try again.
   */
  static async attach(want: DesiredAttachment, ctx: ServeContext): Promise<ServedVolume> {
    const replica = want.replicas.find((r) => r.state === "ONLINE" && r.url !== null)!;
    const v = new ServedVolume(want, ctx, "SERVING");
    const location = parseBlobUrl(replica.url!);
    v.#sas = new ReplaceableSas(location.sas ?? "");
    v.#replicaId = replica.id;
    const blob = new PageBlob(new BlobTransport(location, v.#sas));
    const log = ctx.log.child({ volume: want.volume, epoch: want.epoch });
    try {
      const props = await blob.properties();
      if (props.size !== want.sizeBytes) {
        // The blob is the truth: a resize may not have reached the registry yet.
        log.warn({ blobSize: props.size, sizeBytes: want.sizeBytes }, "blob size differs");
      }
      const backend = new PageBlobBackend(blob, props.size, { leaseId: want.leaseId });
      await mkdir(ctx.socketDir, { recursive: true, mode: 0o700 });
      v.#export = await exportVolume(backend, {
        name: want.volume,
        description: `${blob.url} epoch ${want.epoch}`,
        listen: { unix: v.socket },
        log,
        onFailed: (event) => v.#failed(event),
        onEvent: (event) => log.warn(event, "storage throttling"),
      });
    } catch (err) {
      await blob.close().catch(() => {});
      // The engine failed it while loading its page map: already reported.
      if (v.#state === "FAILED") return v;
      if (err instanceof StorageError && err.fatal) {
        return ServedVolume.refused(want, ctx, `volume ${want.volume} cannot be opened: ${err.message}`);
      }
      throw err;
    }
    const opened = v.#export.volume;
    v.#stats = new StatsWindow(() => opened.metrics());
    // The engine may have failed the volume between open and here.
    if (v.#state !== "SERVING") return v;
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
        await v.#export.drain();
        throw err;
      }
    }
    log.info({ socket: v.socket, device: v.#device }, "volume serving");
    return v;
  }

  get state(): ServingState {
    return this.#state;
  }

  get device(): string | null {
    return this.#device;
  }

  /** Whether `want` is still this attachment (same epoch and lease); else detach and attach again. */
  matches(want: DesiredAttachment): boolean {
    return want.epoch === this.epoch && want.leaseId === this.leaseId;
  }

  /** Put the fresh SAS of `want` into the running volume: no reopen, the next request uses it. */
  refreshSas(want: DesiredAttachment): void {
    const replica = want.replicas.find((r) => r.id === this.#replicaId);
    if (!this.#sas || !replica?.url) return;
    const sas = new URL(replica.url).search;
    if (sas.length > 1) this.#sas.replace(sas);
  }

  /** No longer desired: unbind, drain and flush the export, close. */
  detach(): Promise<void> {
    this.#ended ??= (async () => {
      // The kernel device goes first: unbinding flushes its dirty pages through the export.
      await this.#unbind();
      const flushError = await this.#export?.drain();
      if (flushError) this.#ctx.log.error({ volume: this.name, err: flushError }, "final flush failed");
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
  }

  /** The volume for the next heartbeat; closes the statistics window. */
  report(): VolumeReport {
    return {
      volume: this.name,
      epoch: this.epoch,
      state: this.#state,
      replicas: [],
      ...(this.#device ? { device: this.#device } : {}),
      ...(this.#stats ? { stats: this.#stats.take() } : {}),
    };
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
