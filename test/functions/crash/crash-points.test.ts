/**
 * A crash injected before every durable step of attach, detach and the
 * sweeper's fence + failover (the nodes' desired-state generation bumps
 * and the rings of their liveness rows included) leaves a state that the
 * next sweep repairs: no volume stuck in ATTACHING/DETACHING/FENCING, no
 * lease the registry does not know about, and a further sweep changes
 * nothing.
 *
 * The node whose volume is fenced goes silent while the witnesses (`ALIVE`)
 * beat: the pass finds it SUSPECT, waits for its deadline (moving the fake
 * clock, the witnesses beating meanwhile) and finds it LOST, so the
 * node-suspect and node-lost notes are steps of that one pass. The clock
 * runs ahead of the real time and beats claim it, and an initial pass
 * starts the sweeper watching (health/liveness-judge.ts).
 *
 * The crash goes through the control plane's `faults` seam: the hook throws
 * a SimulatedCrash just before the named step and at every step after it,
 * so nothing further happens (roll-backs included), as with a dead process.
 * Each scenario first runs once without a crash to prove the step list
 * below is the whole sequence, so a new step cannot go untested.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event, EventPage } from "../../../contract/event.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { attachVolume } from "../../../functions/arbiter/attach.ts";
import { WRITER_LOST } from "../../../contract/signals.ts";
import { detachVolume } from "../../../functions/arbiter/detach.ts";
import { type ControlPlane, controlPlane } from "../../../functions/control-plane.ts";
import type { SweepReport } from "../../../functions/health/sweep.ts";
import { readLivenessRow } from "../../../functions/registry/liveness.ts";
import { generationOf, nodes } from "../../../functions/registry/nodes.ts";
import { pools } from "../../../functions/registry/pools.ts";
import { type VolumeRecord, volumes } from "../../../functions/registry/volumes.ts";
import { restStatus } from "../../../functions/rest-error.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { agentNodes, aheadOfRealTime, NOTHING_SWEPT, STEPPED_POLICY, sweepOnFakeClock } from "../agents.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

/** Passes here are at most a few minutes apart (3 x sweepIntervalMs): none restarts the count. */
const POLICY = STEPPED_POLICY;
/** Nodes that stay alive, and witness that the heartbeats' path works: they beat before every sweep. */
const ALIVE = ["n-a", "n-b"];

class SimulatedCrash extends Error {}

let fx: ControlPlaneFixture;
let nowMs = aheadOfRealTime();
let token: IssuedToken;
const { join, heartbeat } = agentNodes(
  () => fx,
  () => token.token,
  () => new Date(nowMs),
);

interface Crash {
  cp: ControlPlane;
  /** Steps reached, in order, including the one that crashed. */
  seen: string[];
  readonly crashed: boolean;
  reported: unknown[];
}

/** A control plane whose process dies just before `step` (never, for ""). */
function crashBefore(step: string): Crash {
  const seen: string[] = [];
  const reported: unknown[] = [];
  let crashed = false;
  const cp = controlPlane({
    registry: fx.registry,
    now: () => new Date(nowMs),
    report: (e) => reported.push(e),
    faults: {
      beforeStep: (name) => {
        seen.push(name);
        if (crashed || name === step) {
          crashed = true;
          throw new SimulatedCrash(`crashed before ${name}`);
        }
      },
    },
  });
  return {
    cp,
    seen,
    reported,
    get crashed() {
      return crashed;
    },
  };
}

/**
 * One pass of `cp`. Its second look at a suspect moves the fake clock to
 * the suspect's deadline, the witnesses beating on meanwhile. A pass
 * itself beats nobody (snapshots taken around it stay comparable): callers
 * beat the witnesses before a pass that moves the clock.
 */
const sweepBy = (cp: ControlPlane): Promise<SweepReport> =>
  sweepOnFakeClock(
    cp,
    (ms) => (nowMs += ms),
    () => heartbeat(...ALIVE),
    POLICY,
  );

const healthyReported: unknown[] = [];
const pass = (): Promise<SweepReport> =>
  sweepBy(
    controlPlane({
      registry: fx.registry,
      now: () => new Date(nowMs),
      report: (e) => healthyReported.push(e),
    }),
  );

async function createVolume(name: string, spec: Record<string, unknown> = {}): Promise<void> {
  await jsonOf<Volume>(
    await fx.call("POST", "/api/v1/volumes", {
      name,
      sizeBytes: 64 * 1024,
      replicas: 2,
      ...spec,
    }),
    201,
  );
}

async function attachByApi(name: string, node: string): Promise<void> {
  await jsonOf(await fx.call("POST", `/api/v1/volumes/${name}/attach`, { node }), 200);
}

async function record(name: string): Promise<VolumeRecord> {
  return (await volumes(fx.registry).get(name))!.value;
}

/** The node's desired-state generation as stored. */
async function generation(node: string): Promise<number> {
  return generationOf((await nodes(fx.registry).get(node))!.value);
}

/** Who wrote `node`'s liveness row last: `ring` once a generation bump has rung it. */
async function livenessWriter(node: string): Promise<string | undefined> {
  const key = (await nodes(fx.registry).get(node))!.value.livenessKey!;
  return (await readLivenessRow(fx.registry.liveness, key))?.by;
}

/** The volume's events of one type, newest first, as an operator lists them. */
async function eventsOf(name: string, type: string): Promise<Event[]> {
  const page = await jsonOf<EventPage>(
    await fx.call("GET", `/api/v1/events?volume=${name}&type=${type}`),
    200,
  );
  return page.items;
}

function replicaBlobs(v: VolumeRecord): PageBlobClient[] {
  return v.status.replicas.map((r) =>
    fx.blobs
      .getContainerClient(replicaContainerName(`${r.pool}-disks`, r.id))
      .getPageBlobClient(`${v.name}/${r.id}`),
  );
}

/** HTTP status of one 512-byte Put Page, with `leaseId` or without any. */
async function writeStatus(blob: PageBlobClient, leaseId?: string): Promise<number> {
  try {
    const res = await blob.uploadPages(Buffer.alloc(512, 7), 0, 512, {
      ...(leaseId ? { conditions: { leaseId } } : {}),
    });
    return res._response.status;
  } catch (err) {
    return restStatus(err) ?? 0;
  }
}

/** Stable, `owner` or DETACHED, and every replica's lease exactly as the record says. */
async function expectSettled(name: string, owner: string | null): Promise<void> {
  const v = await record(name);
  expect(v.status.replicas).toHaveLength(2);
  if (owner === null) {
    expect(v.status).toMatchObject({ state: "DETACHED", ownerNode: null });
    expect(v.leaseId).toBeNull();
    for (const blob of replicaBlobs(v)) {
      expect(["available", "broken"]).toContain((await blob.getProperties()).leaseState);
      // No lease anywhere: nobody is fenced out, a lease-less write goes through.
      expect(await writeStatus(blob)).toBe(201);
      // And no writer's SAS works: its container admits nobody.
      expect(await policiesOf(blob)).toEqual([]);
    }
  } else {
    expect(v.status).toMatchObject({ state: "ATTACHED", ownerNode: owner });
    expect(v.leaseId).toEqual(expect.any(String));
    for (const blob of replicaBlobs(v)) {
      const props = await blob.getProperties();
      expect(props).toMatchObject({ leaseState: "leased", leaseDuration: "infinite" });
      expect(await writeStatus(blob, v.leaseId!)).toBe(201);
      expect(await writeStatus(blob)).toBe(412);
      // Only the writer holding that lease may use a SAS: its container admits that lease alone.
      expect(await policiesOf(blob)).toEqual([v.leaseId]);
    }
  }
}

/** The stored access policies of the container holding `blob`, by name. */
async function policiesOf(blob: { containerName: string }): Promise<string[]> {
  const acl = await fx.blobs.getContainerClient(blob.containerName).getAccessPolicy();
  return acl.signedIdentifiers.map((p) => p.id);
}

/**
 * The repair: past the stuck timeout, two passes settle everything (the
 * second resyncs the replica a lost writer left behind), and the next does
 * nothing.
 */
async function repairAndCheck(name: string, owner: string | null): Promise<void> {
  nowMs += POLICY.stuckAfterMs! + 1_000;
  await heartbeat(...ALIVE);
  await pass();
  await pass();
  const before = await fx.snapshot();
  expect(await pass()).toEqual(NOTHING_SWEPT);
  expect(await fx.snapshot()).toEqual(before);
  await expectSettled(name, owner);
  expect(healthyReported).toEqual([]);
}

/** After a crash: the operation failed with the crash, and nothing but the crash was reported. */
function expectCrashed(crash: Crash, step: string): void {
  expect(crash.crashed).toBe(true);
  expect(crash.seen).toContain(step);
  for (const err of crash.reported) expect(err).toBeInstanceOf(SimulatedCrash);
}

/** Replicas are leased in parallel: compare step lists with each replica run in index order. */
const ordered = (steps: string[]): string[] => {
  const out = [...steps];
  for (let i = 0; i + 1 < out.length; i++) {
    const [a, b] = [out[i]!, out[i + 1]!];
    if (a.replace(/ \d+$/, "") === b.replace(/ \d+$/, "") && a > b) [out[i], out[i + 1]] = [b, a];
  }
  return out;
};

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs) });
  for (const name of ["pa", "pb"]) {
    await fx.addPool(name, `${name}-disks`);
  }
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  for (const name of ALIVE) await join(name);
  await heartbeat(...ALIVE);
  // The first pass only starts watching: silence counts from it.
  expect((await pass()).path).toBe("first pass: silence counts from now");
});
afterAll(() => fx?.dispose());

let serial = 0;
const fresh = (prefix: string) => `${prefix}-${serial++}`;

describe("attach", () => {
  const STEPS = [
    "claim",
    "take-lease 0",
    "take-lease 1",
    "mark-attached",
    "bump-generation attached",
    "ring attached",
    "note volume-attached",
  ];

  it("goes through exactly these steps", async () => {
    const name = fresh("a");
    await createVolume(name);
    const before = await generation("n-a");
    // Its agent wrote the row last: a ring found there is this attach's.
    await heartbeat("n-a");
    const run = crashBefore("");
    await attachVolume(run.cp, name, "n-a");
    expect(ordered(run.seen)).toEqual(STEPS);
    await expectSettled(name, "n-a");
    expect(await generation("n-a")).toBe(before + 1);
    expect(await livenessWriter("n-a")).toBe("ring");
  });

  it.each([
    ["claim", "DETACHED", null],
    ["take-lease 0", "DETACHED", null],
    ["take-lease 1", "DETACHED", null],
    ["mark-attached", "DETACHED", null],
    // The agent learns of this one at its next full fetch of the desired state.
    ["bump-generation attached", "ATTACHED to n-a", "n-a"],
    ["ring attached", "ATTACHED to n-a", "n-a"],
    ["note volume-attached", "ATTACHED to n-a", "n-a"],
  ] as const)("crash before %s: the next sweep leaves it %s", async (step, _ends, owner) => {
    const name = fresh("a");
    await createVolume(name);
    await heartbeat(...ALIVE);
    const crash = crashBefore(step);
    await expect(attachVolume(crash.cp, name, "n-a")).rejects.toBeInstanceOf(SimulatedCrash);
    expectCrashed(crash, step);
    await repairAndCheck(name, owner);
  });
});

describe("detach", () => {
  const STEPS = [
    "claim",
    "bump-generation detached",
    "ring detached",
    "drop-lease 0",
    "drop-lease 1",
    "mark-detached",
    "note volume-detached",
  ];

  async function attached(): Promise<string> {
    const name = fresh("d");
    await createVolume(name);
    await heartbeat(...ALIVE);
    await attachByApi(name, "n-a");
    return name;
  }

  it("goes through exactly these steps", async () => {
    const name = await attached();
    const before = await generation("n-a");
    // Its agent wrote the row last: a ring found there is this detach's.
    await heartbeat("n-a");
    const run = crashBefore("");
    await detachVolume(run.cp, name);
    expect(ordered(run.seen)).toEqual(STEPS);
    await expectSettled(name, null);
    expect(await generation("n-a")).toBe(before + 1);
    expect(await livenessWriter("n-a")).toBe("ring");
  });

  it.each([
    ["claim", "ATTACHED to n-a", "n-a"],
    // The sweep finishing the detach bumps the generation the crash left unbumped.
    ["bump-generation detached", "DETACHED", null],
    // Bumped but not rung: the agent learns of it at its next full fetch.
    ["ring detached", "DETACHED", null],
    ["drop-lease 0", "DETACHED", null],
    ["drop-lease 1", "DETACHED", null],
    ["mark-detached", "DETACHED", null],
    ["note volume-detached", "DETACHED", null],
  ] as const)("crash before %s: the next sweep leaves it %s", async (step, _ends, owner) => {
    const name = await attached();
    const crash = crashBefore(step);
    await expect(detachVolume(crash.cp, name)).rejects.toBeInstanceOf(SimulatedCrash);
    expectCrashed(crash, step);
    await repairAndCheck(name, owner);
  });
});

/**
 * A volume attached to a node of its own whose agent then dies: the node
 * stays silent past suspectAfter while the witnesses beat. The next sweep
 * finds it SUSPECT, takes its second look at the deadline and finds it
 * LOST, then fences the volume and fails it over (to n-b, its preferred
 * node) or, with manual failover, detaches it; so the crash may hit the
 * node's notes too.
 */
async function orphanedVolume(spec: Record<string, unknown>): Promise<string> {
  const name = fresh("f");
  const src = `src-${name}`;
  await join(src);
  await heartbeat(...ALIVE);
  await createVolume(name, spec);
  await attachByApi(name, src);
  // Its agent's last beat, after the attach rang its row.
  await heartbeat(src);
  nowMs += POLICY.suspectAfterMs + 5_000;
  await heartbeat(...ALIVE);
  return name;
}

describe("fence and automatic failover", () => {
  const SPEC = { preferredNodes: ["n-b"] };
  const STEPS = [
    // The node's own moves are single writes; only their events are steps. SUSPECT at the
    // pass's first look, LOST at its second.
    "note node-suspect",
    "note node-lost",
    "mark-fencing",
    "bump-generation fenced",
    "ring fenced",
    "note volume-fenced",
    "drop-lease 0",
    "drop-lease 1",
    "claim",
    "take-lease 0",
    "take-lease 1",
    "mark-attached",
    "bump-generation attached",
    "ring attached",
    "note volume-failed-over",
    // The second replica: its writer was lost (fence.ts withWriterLost).
    "note replica-offline",
  ];

  it("goes through exactly these steps", async () => {
    const name = await orphanedVolume(SPEC);
    const src = (await record(name)).status.ownerNode!;
    const [fromBefore, toBefore] = [await generation(src), await generation("n-b")];
    const run = crashBefore("");
    const report = await sweepBy(run.cp);
    expect(report).toMatchObject({ suspect: [src], lost: [src], failedOver: [name] });
    expect(ordered(run.seen)).toEqual(STEPS);
    expect(run.reported).toEqual([]);
    await expectSettled(name, "n-b");
    expect(await generation(src)).toBe(fromBefore + 1);
    expect(await generation("n-b")).toBe(toBefore + 1);
    expect(await livenessWriter(src)).toBe("ring");
    expect(await livenessWriter("n-b")).toBe("ring");

    // The lost writer may have left writes on one replica only: the second is resynced from the
    // first in full, at once, and its pool is not held to blame.
    const [kept, stale] = (await record(name)).status.replicas;
    expect(kept).toMatchObject({ state: "ONLINE" });
    expect(stale).toMatchObject({
      state: "OFFLINE",
      stale: true,
      message: expect.stringMatching(new RegExp(`^${WRITER_LOST}: .* from ${kept!.id}$`)),
    });
    await heartbeat(...ALIVE);
    await pass();
    expect((await record(name)).status.replicas[1]).toMatchObject({ state: "RESYNCING", message: "resync ordered" });
    expect((await pools(fx.registry).get(stale!.pool))!.value.health).toBe("GOOD");
  });

  // Wherever it crashes, it ends ATTACHED to n-b. An interrupted failover attach is rolled
  // back like any other attach, but the volume is still owed its failover: the same pass
  // places it again.
  it.each(STEPS)("crash before %s: the next sweep leaves it ATTACHED to n-b", async (step) => {
    const name = await orphanedVolume(SPEC);
    const crash = crashBefore(step);
    const report = await sweepBy(crash.cp);
    expectCrashed(crash, step);
    expect(crash.reported.length).toBeGreaterThan(0);
    expect(report.failedOver).toEqual([]);
    await repairAndCheck(name, "n-b");
    expect((await record(name)).status.failoverPending).toBeUndefined();
  });
});

describe("fence with manual failover", () => {
  const SPEC = { failover: "manual" };
  const STEPS = [
    // The node's own moves are single writes; only their events are steps. SUSPECT at the
    // pass's first look, LOST at its second.
    "note node-suspect",
    "note node-lost",
    "mark-fencing",
    "bump-generation fenced",
    "ring fenced",
    "note volume-fenced",
    "drop-lease 0",
    "drop-lease 1",
    "mark-detached",
    // The second replica: its writer was lost (fence.ts withWriterLost).
    "note replica-offline",
    "note volume-detached",
  ];

  it("goes through exactly these steps", async () => {
    const name = await orphanedVolume(SPEC);
    const src = (await record(name)).status.ownerNode!;
    const run = crashBefore("");
    const report = await sweepBy(run.cp);
    expect(report).toMatchObject({ suspect: [src], lost: [src], detached: [name] });
    expect(ordered(run.seen)).toEqual(STEPS);
    await expectSettled(name, null);
  });

  it.each(STEPS)("crash before %s: the next sweep leaves it DETACHED", async (step) => {
    const name = await orphanedVolume(SPEC);
    const crash = crashBefore(step);
    const report = await sweepBy(crash.cp);
    expectCrashed(crash, step);
    expect(crash.reported.length).toBeGreaterThan(0);
    expect(report.detached).toEqual([]);
    await repairAndCheck(name, null);
  });
});

/**
 * The failover mark outlives a roll-back even when no node can take the
 * volume yet: the failover attach to `spare` (its only live eligible node)
 * is interrupted, and `spare` goes silent before the repair.
 */
describe("failover owed after an interrupted failover attach", () => {
  async function rolledBackWithNowhereToGo(): Promise<{ name: string; spare: string }> {
    const name = fresh("w");
    const src = `src-${name}`;
    const spare = `spare-${name}`;
    await join(src);
    await join(spare);
    await heartbeat(...ALIVE, spare);
    await createVolume(name, { requiredNodes: [src, spare] });
    await attachByApi(name, src);
    await heartbeat(src);
    nowMs += POLICY.suspectAfterMs + 5_000;
    await heartbeat(...ALIVE, spare);
    const crash = crashBefore("take-lease 0");
    expect((await sweepBy(crash.cp)).lost).toContain(src);
    expectCrashed(crash, "take-lease 0");
    expect((await record(name)).status).toMatchObject({
      state: "ATTACHING",
      ownerNode: spare,
      failoverPending: true,
    });

    // Past the stuck timeout, and `spare` silent since: it is LOST too.
    nowMs += POLICY.stuckAfterMs! + 1_000;
    await heartbeat(...ALIVE);
    const report = await pass();
    expect(report.lost).toContain(spare);
    expect(report.recovered).toContain(name);
    expect(report.waiting).toContain(name);
    expect(report.failedOver).not.toContain(name);
    const v = await record(name);
    expect(v.status).toMatchObject({ state: "DETACHED", ownerNode: null, failoverPending: true });
    expect(v.leaseId).toBeNull();
    // Operators see the mark.
    const view = await jsonOf<Volume>(await fx.call("GET", `/api/v1/volumes/${name}`), 200);
    expect(view.status.failoverPending).toBe(true);

    // Still nowhere to go: the next pass reports it waiting and writes nothing.
    const before = await fx.snapshot();
    expect((await pass()).waiting).toContain(name);
    expect(await fx.snapshot()).toEqual(before);
    return { name, spare };
  }

  it("stays DETACHED and marked, then attaches once an eligible node is READY", async () => {
    const { name, spare } = await rolledBackWithNowhereToGo();
    await heartbeat(spare);
    const report = await pass();
    expect(report.failedOver).toContain(name);
    expect(report.waiting).not.toContain(name);
    await expectSettled(name, spare);
    // The event names the node it failed over from, as a failover in one go does.
    const [failedOver, ...others] = await eventsOf(name, "volume-failed-over");
    expect(others).toEqual([]);
    expect(failedOver).toMatchObject({
      node: spare,
      data: { from: `src-${name}`, resumed: true },
      message: expect.stringContaining(`failed over from src-${name} to ${spare}`),
    });
    expect((await record(name)).status.failoverPending).toBeUndefined();
    expect((await pass()).failedOver).toEqual([]);
    await expectSettled(name, spare);
    expect(healthyReported).toEqual([]);
    // Leave nothing for later passes to fence.
    await jsonOf(await fx.call("POST", `/api/v1/volumes/${name}/detach`, {}), 200);
  });

  it("is cleared by an operator's detach: the sweep then leaves the volume alone", async () => {
    const { name, spare } = await rolledBackWithNowhereToGo();
    const view = await jsonOf<Volume>(
      await fx.call("POST", `/api/v1/volumes/${name}/detach`, {}),
      200,
    );
    expect(view.status).toMatchObject({ state: "DETACHED", ownerNode: null });
    expect(view.status.failoverPending).toBeUndefined();
    const [cancelled, ...others] = await eventsOf(name, "volume-failover-cancelled");
    expect(others).toEqual([]);
    expect(cancelled).toMatchObject({ data: { reason: "detached" } });
    expect(cancelled!.message).toMatch(/detached by request: the failover it was owed is cancelled/);
    // A second detach has no mark to clear, and says nothing more.
    await jsonOf(await fx.call("POST", `/api/v1/volumes/${name}/detach`, {}), 200);
    expect(await eventsOf(name, "volume-failover-cancelled")).toHaveLength(1);
    await heartbeat(spare);
    const report = await pass();
    expect(report.failedOver).not.toContain(name);
    expect(report.waiting).not.toContain(name);
    await expectSettled(name, null);
    expect((await record(name)).status.failoverPending).toBeUndefined();
    expect(healthyReported).toEqual([]);
  });

  it("is kept by a change that leaves failover automatic", async () => {
    const { name, spare } = await rolledBackWithNowhereToGo();
    const view = await jsonOf<Volume>(
      await fx.call("PATCH", `/api/v1/volumes/${name}`, { preferredNodes: [spare] }),
      200,
    );
    expect(view.status.failoverPending).toBe(true);
    expect(await eventsOf(name, "volume-failover-cancelled")).toEqual([]);
    await heartbeat(spare);
    expect((await pass()).failedOver).toContain(name);
    await expectSettled(name, spare);
    await jsonOf(await fx.call("POST", `/api/v1/volumes/${name}/detach`, {}), 200);
  });

  it("is cleared by setting failover to manual, which the sweep would never act on", async () => {
    const { name, spare } = await rolledBackWithNowhereToGo();
    const view = await jsonOf<Volume>(
      await fx.call("PATCH", `/api/v1/volumes/${name}`, { failover: "manual" }),
      200,
    );
    expect(view.spec.failover).toBe("manual");
    expect(view.status).toMatchObject({ state: "DETACHED", ownerNode: null });
    expect(view.status.failoverPending).toBeUndefined();
    expect((await record(name)).status.failoverPending).toBeUndefined();
    const [cancelled, ...others] = await eventsOf(name, "volume-failover-cancelled");
    expect(others).toEqual([]);
    expect(cancelled).toMatchObject({ data: { reason: "failover-manual" } });
    expect(cancelled!.message).toMatch(/failover set to manual/);
    expect(await eventsOf(name, "volume-updated")).toHaveLength(1);

    // Nothing left for the sweeper, even with an eligible node back, once it has resynced the
    // replica the lost writer left OFFLINE (a server-side copy: the volume is detached).
    await heartbeat(spare);
    expect((await record(name)).status.replicas.map((r) => r.state)).toEqual(["ONLINE", "OFFLINE"]);
    await pass();
    expect((await record(name)).status.replicas.map((r) => r.state)).toEqual(["ONLINE", "ONLINE"]);
    const before = await fx.snapshot();
    const report = await pass();
    expect(report.failedOver).not.toContain(name);
    expect(report.waiting).not.toContain(name);
    expect(await fx.snapshot()).toEqual(before);
    await expectSettled(name, null);
    // Back to automatic: no mark comes back with it, nothing is owed.
    await jsonOf(await fx.call("PATCH", `/api/v1/volumes/${name}`, { failover: "automatic" }), 200);
    expect((await pass()).failedOver).not.toContain(name);
    await expectSettled(name, null);
    expect(healthyReported).toEqual([]);
  });
});

describe("a policy change while an attach or detach is under way", () => {
  it("is refused as busy, and the step it would have broken completes", async () => {
    const name = fresh("p");
    await createVolume(name);
    await heartbeat(...ALIVE);
    const crash = crashBefore("take-lease 0");
    await expect(attachVolume(crash.cp, name, "n-a")).rejects.toBeInstanceOf(SimulatedCrash);
    expect((await record(name)).status.state).toBe("ATTACHING");
    const before = await fx.snapshot();
    const err = await fx.call("PATCH", `/api/v1/volumes/${name}`, { failover: "manual" });
    expect((await errorOf(err, 409)).code).toBe("VolumeBusy");
    expect(await fx.snapshot()).toEqual(before);
    await repairAndCheck(name, null);
  });
});
