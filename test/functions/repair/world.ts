/**
 * A cluster for repair tests: a control plane over Azurite with pools
 * `pa`, `pc` reached directly and `pb` through a fault proxy (the first
 * two-replica volume of a world lands on `pa` and `pb`: equal pools are
 * chosen by name) (its outage
 * is the proxy cutting connections), one node that heartbeats through the
 * API as its agent would, and a sweeper on the same stepped clock.
 */
import { expect } from "vitest";
import type { Event } from "../../../contract/event.ts";
import type { JoinResponse, ReportedEvent, VolumeReport } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { type ControlPlane, controlPlane, type Faults } from "../../../functions/control-plane.ts";
import type { RepairPolicy } from "../../../functions/health/repair-policy.ts";
import { type SweepPolicy, sweep } from "../../../functions/health/sweep.ts";
import { listEvents } from "../../../functions/registry/events.ts";
import { type VolumeRecord, volumes } from "../../../functions/registry/volumes.ts";
import { type FaultProxy, startFaultProxy } from "../../harness/fault-proxy.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

export const REPAIR: RepairPolicy = {
  suspectWindowMs: 60_000,
  badAfterMs: 30_000,
  permanentAfterMs: 300_000,
  probeTimeoutMs: 3_000,
  reportGraceMs: 5_000,
};
/** Nodes heartbeat before every sweep here; they are never judged silent. */
export const POLICY: SweepPolicy = {
  suspectAfterMs: 3_600_000,
  lostAfterMs: 7_200_000,
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
  /** One sweep pass, after a heartbeat of every node with its last reports. */
  pass(faults?: Faults): Promise<void>;
  join(node: string): Promise<void>;
  /** `node` stops heartbeating (its agent died): later passes leave it silent. */
  silence(node: string): void;
  /** Heartbeat `node` with these volume reports (kept for the next passes) and, once, these events. */
  report(node: string, volumes: VolumeReport[], events?: ReportedEvent[]): Promise<void>;
  create(name: string, spec?: Record<string, unknown>): Promise<Volume>;
  attach(name: string, node: string): Promise<void>;
  record(name: string): Promise<VolumeRecord>;
  events(volume: string, type: string): Promise<Event[]>;
  dispose(): Promise<void>;
}

export async function startWorld(): Promise<World> {
  const clock = { ms: Date.UTC(2025, 0, 1) };
  const fx = await startControlPlane({ now: () => new Date(clock.ms) });
  const proxy = await startFaultProxy(fx.azurite.blobEndpoint);
  const viaProxy = fx.connectionString.replace(
    /BlobEndpoint=[^;]+/,
    `BlobEndpoint=${proxy.blobEndpoint}`,
  );
  await fx.addPool("pa", "pa-disks");
  await jsonOf(
    await fx.call("POST", "/api/v1/pools", {
      name: "pb",
      container: "pb-disks",
      auth: { kind: "connectionString", connectionString: viaProxy },
    }),
    201,
  );
  await fx.addPool("pc", "pc-disks");
  const token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  const credentials = new Map<string, string>();
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
    const res = await fx.app.request(`/api/v1/nodes/${node}/heartbeat`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${credentials.get(node)}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ volumes: reports, events }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
  }

  return {
    fx,
    proxy,
    clock,
    reported,
    cp,
    async pass(faults) {
      for (const [node, reports] of lastReports) await report(node, reports);
      await sweep(cp(faults), POLICY);
    },
    async join(node) {
      const res = await fx.app.request("/api/v1/nodes/join", {
        method: "POST",
        headers: { authorization: `Bearer ${token.token}`, "content-type": "application/json" },
        body: JSON.stringify({ name: node }),
      });
      credentials.set(node, (await jsonOf<JoinResponse>(res, 201)).credential);
      lastReports.set(node, []);
    },
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
      return (await listEvents(fx.registry, { volume, type }, { limit: 100 })).items;
    },
    async dispose() {
      await proxy.close();
      await fx.dispose();
    },
  };
}
