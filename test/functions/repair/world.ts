/**
 * A cluster for repair tests: a control plane over Azurite with pools
 * `pa`, `pc` reached directly and `pb` through a fault proxy (the first
 * two-replica volume of a world lands on `pa` and `pb`: equal pools are
 * chosen by name) (its outage
 * is the proxy cutting connections), nodes that beat and report as their
 * agents would (../agents.ts), and a sweeper on the same stepped clock.
 */
import type { Event } from "../../../contract/event.ts";
import type { DesiredState, ReportedEvent, VolumeReport } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { type ControlPlane, controlPlane, type Faults } from "../../../functions/control-plane.ts";
import type { RepairPolicy } from "../../../functions/health/repair-policy.ts";
import { type SweepPolicy, sweep } from "../../../functions/health/sweep.ts";
import { DEFAULT_EVENT_RETENTION_DAYS, listEvents } from "../../../functions/registry/events.ts";
import { type VolumeRecord, volumes } from "../../../functions/registry/volumes.ts";
import { type FaultProxy, startFaultProxy } from "../../harness/fault-proxy.ts";
import { aheadOfRealTime, agentNodes, NO_SECOND_LOOK } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

export const REPAIR: RepairPolicy = {
  suspectWindowMs: 60_000,
  badAfterMs: 30_000,
  permanentAfterMs: 300_000,
  probeTimeoutMs: 3_000,
  reportGraceMs: 5_000,
};
/**
 * Nodes beat before every sweep here; they are never judged silent unless
 * silenced. The clock jumps minutes between passes, so passes are an hour
 * apart as far as the judge's sweeper-gap rule goes.
 */
export const POLICY: SweepPolicy = {
  heartbeatIntervalMs: 60_000,
  suspectAfterMs: 3_600_000,
  lostAfterMs: 7_200_000,
  sweepIntervalMs: 3_600_000,
  stuckAfterMs: 60_000,
  repair: REPAIR,
};

export interface World {
  fx: ControlPlaneFixture;
  proxy: FaultProxy;
  /** The shared clock, in ms; tests move it forward. */
  clock: { ms: number };
  reported: unknown[];
  cp(faults?: Faults): ControlPlane;
  /** One sweep pass, after a beat and a report (its last volumes) of every node. */
  pass(faults?: Faults): Promise<void>;
  join(node: string): Promise<void>;
  /** `node` stops beating and reporting (its agent died): later passes leave it silent. */
  silence(node: string): void;
  /** Report `node`'s volumes (kept for the next passes) and, once, these events. */
  report(node: string, volumes: VolumeReport[], events?: ReportedEvent[]): Promise<void>;
  /** What `node`'s agent fetches as its desired state. */
  desired(node: string): Promise<DesiredState>;
  create(name: string, spec?: Record<string, unknown>): Promise<Volume>;
  attach(name: string, node: string): Promise<void>;
  record(name: string): Promise<VolumeRecord>;
  events(volume: string, type: string): Promise<Event[]>;
  dispose(): Promise<void>;
}

export async function startWorld(): Promise<World> {
  const clock = { ms: aheadOfRealTime() };
  const fx = await startControlPlane({ now: () => new Date(clock.ms) });
  const proxy = await startFaultProxy(fx.azurite.blobEndpoint);
  await fx.addPool("pa", "pa-disks");
  await fx.addPool("pb", "pb-disks", proxy.blobEndpoint);
  await fx.addPool("pc", "pc-disks");
  const token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  const agents = agentNodes(
    () => fx,
    () => token.token,
    () => new Date(clock.ms),
  );
  const lastReports = new Map<string, VolumeReport[]>();
  const reported: unknown[] = [];

  const cp = (faults?: Faults) =>
    controlPlane({
      registry: fx.registry,
      now: () => new Date(clock.ms),
      report: (e) => reported.push(e),
      ...(faults ? { faults } : {}),
    });

  async function report(node: string, reports: VolumeReport[], events: ReportedEvent[] = []): Promise<void> {
    lastReports.set(node, reports);
    await agents.report(node, { volumes: reports, events });
  }

  return {
    fx,
    proxy,
    clock,
    reported,
    cp,
    async pass(faults) {
      for (const [node, reports] of lastReports) {
        await agents.heartbeat(node);
        await report(node, reports);
      }
      await sweep(cp(faults), POLICY, NO_SECOND_LOOK);
    },
    async join(node) {
      await agents.join(node);
      lastReports.set(node, []);
    },
    desired: (node) => agents.desired(node),
    silence(node) {
      lastReports.delete(node);
    },
    report,
    async create(name, spec = {}) {
      return jsonOf<Volume>(
        await fx.call("POST", "/api/v1/volumes", {
          name,
          sizeBytes: 1024 * 1024,
          replicas: 2,
          ...spec,
        }),
        201,
      );
    },
    async attach(name, node) {
      await jsonOf(await fx.call("POST", `/api/v1/volumes/${name}/attach`, { node }), 200);
    },
    async record(name) {
      return (await volumes(fx.registry).get(name))!.value;
    },
    async events(volume, type) {
      const horizon = { now: new Date(clock.ms), retentionDays: DEFAULT_EVENT_RETENTION_DAYS };
      return (await listEvents(fx.registry, { volume, type }, { limit: 100 }, horizon)).items;
    },
    async dispose() {
      await proxy.close();
      await fx.dispose();
    },
  };
}
