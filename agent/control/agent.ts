/**
 * `pagedisk agent run`: the daemon of one VM. It joins once (node.json),
 * then beats to the control plane's liveness table, learns its desired
 * state when that table says it changed, reports when its volumes change,
 * and serves every volume the control plane gives it, straight to the page
 * blobs. Nothing it does steadily holds a Functions execution open.
 *
 * The data path never depends on the control plane: while it is away the
 * volumes keep serving, and the agent never releases a volume on its own nor
 * touches a lease. On SIGTERM/SIGINT it stops its loops, drains and flushes
 * every export and exits 0, leaving the kernel bindings recorded: systemd
 * restarts it and the new agent adopts them. After a `kill -9` the same
 * happens with no flush (the binder replaces bindings it cannot reuse).
 */
import { join } from "node:path";
import type { KernelBinder } from "../host/binding.ts";
import type { Logger } from "../log.ts";
import type { ApiClientError } from "./api-client.ts";
import { EventQueue } from "./event-queue.ts";
import { hostFacts } from "./facts.ts";
import { joinCluster } from "./join.ts";
import { LivenessLoop } from "./liveness-loop.ts";
import { NodeClient } from "./node-client.ts";
import { forgetLivenessTarget, readLivenessTarget, saveLivenessTarget } from "./node-file.ts";
import { Reconciler } from "./reconcile.ts";
import { ReportLoop } from "./report-loop.ts";
import type { ServedVolume } from "./served-volume.ts";
import type { ServedVolume as StatusVolume, StatusSource } from "../status/source.ts";
import { AGENT_VERSION } from "./version.ts";
import { stopSignal } from "../serve/signals.ts";

/** Exit codes of `pagedisk agent run` and `agent join`. */
export const AGENT_EXIT = {
  ok: 0,
  /** Could not start, or the control plane refused the join. */
  failed: 1,
  /** The command line is wrong; nothing was done. */
  usage: 2,
  /** The control plane refused the node's credential (removed or revoked). */
  rejected: 3,
} as const;

export type KernelMode = "auto" | "nbd" | "fuse" | "none";

export interface AgentOptions {
  /** API root (control-plane-url.ts). */
  apiUrl: string;
  stateDir: string;
  token?: string | undefined;
  name?: string | undefined;
  kernel: KernelMode;
  /** `unix:PATH` or `tcp:127.0.0.1:PORT`. */
  statusListen: string;
  /** Bytes per bit of the dirty-region logs of replicated volumes; the engine's default when undefined. */
  dirtyGranularity?: number | undefined;
  log: Logger;
  /** Where the one human line goes (stdout). */
  print: (line: string) => void;
}

/** The parts of the agent that live in other folders, passed in by the CLI. */
export interface AgentParts {
  openBinder(opts: { stateDir: string; mode: KernelMode; log: Logger }): Promise<KernelBinder>;
  /** Serve the status API for `source` on `listen` (unix:PATH or tcp:HOST:PORT). */
  listenStatus?(
    source: StatusSource,
    listen: string,
  ): Promise<{ address: string; close(): Promise<void> }>;
}

/** Run until a signal or a refused credential; resolves with the exit code. */
export async function runAgent(opts: AgentOptions, parts: AgentParts): Promise<number> {
  const { log } = opts;
  const signalled = stopSignal(AGENT_EXIT.failed);
  const { identity } = await joinCluster({
    apiUrl: opts.apiUrl,
    stateDir: opts.stateDir,
    token: opts.token,
    name: opts.name,
    log,
  });
  // `none` serves exports only (a test, or a VM that binds them by hand): no binder at all.
  const binder =
    opts.kernel === "none"
      ? undefined
      : await parts.openBinder({ stateDir: opts.stateDir, mode: opts.kernel, log });
  const kernel = binder?.kind ?? "none";

  const events = new EventQueue();
  const reconciler = new Reconciler({
    node: identity.node,
    socketDir: join(opts.stateDir, "sockets"),
    // Kept across restarts: a resync after one copies only what was missed.
    dirtyDir: join(opts.stateDir, "dirty"),
    dirtyGranularity: opts.dirtyGranularity,
    binder,
    log,
    report: (event) => {
      events.push(event);
      reports.soon();
    },
  });
  const client = new NodeClient({
    apiUrl: identity.controlPlane,
    node: identity.node,
    credential: identity.credential,
  });

  let refuse: (err: ApiClientError) => void = () => {};
  const refused = new Promise<ApiClientError>((res) => {
    refuse = res;
  });
  // Either loop may be the first to hear it, or both: said once.
  let toldRejected = false;
  const rejected = (err: ApiClientError) => {
    if (toldRejected) return;
    toldRejected = true;
    log.error(
      { code: err.code, status: err.status, message: err.message },
      "the control plane refused this node's credential (node removed or credential revoked): stopping",
    );
    refuse(err);
  };
  // The newest desired-state generation applied: reports carry it, and a change goes at once,
  // since a detach waits for it to know the volumes it took away are drained.
  let appliedGeneration: number | undefined;
  const liveness = new LivenessLoop({
    client,
    target: await readLivenessTarget(opts.stateDir),
    saveTarget: (target) => saveLivenessTarget(opts.stateDir, target),
    apply: (state) => reconciler.apply(state),
    applied: (generation) => {
      if (generation === appliedGeneration) return;
      appliedGeneration = generation;
      reports.soon();
    },
    onRejected: rejected,
    log,
  });
  const reports = new ReportLoop({
    client,
    agentVersion: AGENT_VERSION,
    facts: hostFacts(),
    volumes: (withStats) => reconciler.reports(withStats),
    appliedGeneration: () => appliedGeneration,
    delivered: (sent) => reconciler.delivered(sent),
    events,
    // A generation this agent has not fetched (a ring it has yet to hear, or lost): fetch it.
    // One it has fetched and is still applying is the loop's to ignore.
    onAnswer: ({ desiredGeneration }) => liveness.refresh(desiredGeneration),
    onRejected: rejected,
    log,
  });

  const status = await parts.listenStatus?.(
    {
      node: () => ({
        name: identity.node,
        version: AGENT_VERSION,
        controlPlane: identity.controlPlane,
        connected: liveness.connected,
        lastHeartbeatAt: liveness.lastHeartbeatAt,
      }),
      volumes: () => reconciler.volumes().flatMap(statusOf),
    },
    opts.statusListen,
  );
  liveness.start();
  reports.start();
  log.info(
    { node: identity.node, controlPlane: identity.controlPlane, kernel, status: status?.address },
    "agent running",
  );
  opts.print(
    `pagedisk agent: node ${identity.node} running with control plane ${identity.controlPlane} (kernel ${kernel}${status ? `, status ${status.address}` : ""})`,
  );

  const outcome = await Promise.race([signalled, refused]);
  const code = typeof outcome === "string" ? AGENT_EXIT.ok : AGENT_EXIT.rejected;
  log.info(
    typeof outcome === "string" ? { signal: outcome } : { code: outcome.code },
    "agent stopping: draining exports, keeping kernel bindings",
  );
  await liveness.stop();
  // Its SAS is of no more use to this node, and nobody's to keep on disk.
  if (code === AGENT_EXIT.rejected) {
    await forgetLivenessTarget(opts.stateDir).catch((err: unknown) => log.warn({ err }, "cannot delete liveness.json"));
  }
  await reports.stop();
  await reconciler.stop();
  await status?.close().catch((err: unknown) => log.warn({ err }, "status API close failed"));
  await binder?.close().catch((err: unknown) => log.warn({ err }, "kernel binder close failed"));
  log.info({ code }, "agent stopped");
  return code;
}

/** A volume as the status API shows it; one refused before it was ever opened has no numbers to show. */
function statusOf(v: ServedVolume): StatusVolume[] {
  const opened = v.metrics();
  if (!opened) return [];
  return [
    {
      name: v.name,
      epoch: v.epoch,
      state: v.state,
      sizeBytes: v.sizeBytes,
      socket: v.socket,
      device: v.device,
      metrics: () => v.metrics() ?? opened,
      replicas: () => v.replicas(),
    },
  ];
}

