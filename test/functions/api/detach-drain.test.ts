/**
 * A detach waits for the owner to drain the volume before dropping its
 * leases (functions/arbiter/detach-drain.ts): the detach rings the owner's
 * liveness row, its agent's next beat fails and it fetches its desired
 * state, and the wait, woken by the node's reports (report-watch.ts
 * `reportsRecorded`), ends when a report to `/report` says the owner
 * applied the generation that took the volume away and no longer serves
 * it. Not waited for: `force=true`, an owner that is not READY, an agent
 * that does not report its applied generation (one before 0.2, on the
 * deprecated `/heartbeat`); and never past the deadline. The
 * `volume-detached` event records which. That a report which must not end
 * the wait does not is certain only in drain-state.test.ts: here the check
 * after such a report can run before the woken wait's re-read.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import type { Event, EventPage } from "../../../contract/event.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { reportsRecorded } from "../../../functions/arbiter/report-watch.ts";
import { generationOf, nodes } from "../../../functions/registry/nodes.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import type { FaultProxy } from "../../harness/fault-proxy.ts";
import { agentNodes } from "../agents.ts";
import {
  type ControlPlaneFixture,
  jsonOf,
  startControlPlane,
  startProxiedControlPlane,
} from "../fixture.ts";


/** Long enough never to end a test that waits for a report. */
const DRAIN_MS = 120_000;
/** The deadline of the control plane that tests the deadline. */
const SHORT_DRAIN_MS = 300;

let fx: ControlPlaneFixture;
let proxy: FaultProxy;
let short: ControlPlaneFixture;
let token: IssuedToken;
let shortToken: IssuedToken;
const agents = agentNodes(
  () => fx,
  () => token.token,
);
/** Nodes of the control plane with the short deadline. */
const shortAgents = agentNodes(
  () => short,
  () => shortToken.token,
);

beforeAll(async () => {
  // Real clocks: the storage service checks the SAS of every beat against its own.
  [{ fx, proxy }, short] = await Promise.all([
    startProxiedControlPlane({ now: () => new Date(), detachDrainMs: DRAIN_MS }),
    startControlPlane({ now: () => new Date(), detachDrainMs: SHORT_DRAIN_MS }),
  ]);
  for (const f of [fx, short]) {
    for (const name of ["pa", "pb"]) await f.addPool(name, `${name}-disks`);
  }
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  shortToken = await jsonOf<IssuedToken>(await short.call("POST", "/api/v1/tokens", {}), 201);
  await agents.join("vm-1");
});
afterAll(async () => {
  await fx?.dispose();
  await short?.dispose();
});

async function attachedVolume(f: ControlPlaneFixture, name: string, node: string): Promise<Volume> {
  await jsonOf(
    await f.call("POST", "/api/v1/volumes", { name, sizeBytes: 1024 * 1024, replicas: 2 }),
    201,
  );
  await jsonOf(await f.call("POST", `/api/v1/volumes/${name}/attach`, { node }), 200);
  return jsonOf<Volume>(await f.call("GET", `/api/v1/volumes/${name}`), 200);
}

function blobs(f: ControlPlaneFixture, v: Volume): PageBlobClient[] {
  return v.status.replicas.map((r) =>
    f.blobs
      .getContainerClient(replicaContainerName(`${r.pool}-disks`, r.id))
      .getPageBlobClient(`${v.name}/${r.id}`),
  );
}

async function leaseStates(f: ControlPlaneFixture, v: Volume): Promise<Array<string | undefined>> {
  return Promise.all(blobs(f, v).map(async (b) => (await b.getProperties()).leaseState));
}

async function detachedEvent(f: ControlPlaneFixture, name: string): Promise<Event> {
  const page = await jsonOf<EventPage>(
    await f.call("GET", `/api/v1/events?volume=${name}&type=volume-detached`),
    200,
  );
  expect(page.items).toHaveLength(1);
  return page.items[0]!;
}

/**
 * Resolves once `count` detaches wait for vm-1's reports. A wait subscribes
 * just before its first read of the node's row, which the proxy sees.
 */
function waiting(count: number): Promise<void> {
  return proxy.waitFor(() => reportsRecorded(fx.registry).waiting("vm-1") === count);
}

/**
 * vm-1's agent serves what its desired state lists, and its beats are
 * conditional on the ETag that fetch gave; it has applied that generation.
 */
async function servingAsFetched(): Promise<number> {
  return (await agents.desired("vm-1")).generation;
}

/**
 * What vm-1's agent does when the detach rings its row: its next beat
 * fails, and it fetches its desired state. Returns the generation fetched.
 */
async function hearRing(volume: string): Promise<number> {
  expect(await agents.nextBeat("vm-1")).toBe("rung");
  const before = await agents.desired("vm-1");
  expect(before.attachments.map((a) => a.volume)).not.toContain(volume);
  return before.generation;
}

/** A volume report as the agent sends it. */
const served = (volume: string, epoch: number, state: "SERVING" | "STOPPED") => ({
  volume,
  epoch,
  state,
  replicas: [],
});

describe("detach waits for the owner's drain", () => {
  it("drops the leases only after a report says the volume is drained at the new generation", async () => {
    const v = await attachedVolume(fx, "drained", "vm-1");
    // The agent serves it, and says which generation it applied: it speaks drains.
    const applied = await servingAsFetched();
    await agents.report("vm-1", { appliedGeneration: applied, volumes: [served("drained", 1, "SERVING")] });

    const detach = fx.call("POST", "/api/v1/volumes/drained/detach");
    await waiting(1);
    const generation = await hearRing("drained");
    expect(generation).toBe(applied + 1);

    // A report from before the agent applied the change: still serving, still waiting.
    await agents.report("vm-1", { appliedGeneration: applied, volumes: [served("drained", 1, "SERVING")] });
    // Applied, but the volume still listed as serving (its drain not over): still waiting.
    await agents.report("vm-1", { appliedGeneration: generation, volumes: [served("drained", 1, "SERVING")] });
    expect((await volumes(fx.registry).get("drained"))!.value.status.state).toBe("DETACHING");
    expect(await leaseStates(fx, v)).toEqual(["leased", "leased"]);
    expect(reportsRecorded(fx.registry).waiting("vm-1")).toBe(1);

    await agents.report("vm-1", { appliedGeneration: generation, volumes: [served("drained", 1, "STOPPED")] });
    const detached = await jsonOf<Volume>(await detach, 200);
    expect(detached.status).toMatchObject({ state: "DETACHED", ownerNode: null, epoch: 2 });
    expect(await leaseStates(fx, v)).toEqual(["available", "available"]);
    expect(reportsRecorded(fx.registry).waiting("vm-1")).toBe(0);
    const event = await detachedEvent(fx, "drained");
    expect(event.data).toMatchObject({ drained: true });
    expect(event.message).not.toMatch(/without its drain/);
  });

  it("a volume absent from the report counts as drained", async () => {
    await attachedVolume(fx, "gone-from-report", "vm-1");
    await servingAsFetched();
    const detach = fx.call("POST", "/api/v1/volumes/gone-from-report/detach");
    await waiting(1);
    const generation = await hearRing("gone-from-report");
    await agents.report("vm-1", { appliedGeneration: generation, volumes: [] });
    expect((await jsonOf<Volume>(await detach, 200)).status.state).toBe("DETACHED");
    expect((await detachedEvent(fx, "gone-from-report")).data).toMatchObject({ drained: true });
  });

  // Should the report not wake it, the detach would wait out DRAIN_MS: the bound is what lets this test fail then.
  it("is woken by the report itself, not by its periodic re-read of the node", { timeout: 30_000 }, async () => {
    await attachedVolume(fx, "woken", "vm-1");
    await servingAsFetched();
    // The wait's periodic re-read never comes: only a report recorded in this process can end it early.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    onTestFinished(() => void vi.useRealTimers());
    const detach = fx.call("POST", "/api/v1/volumes/woken/detach");
    await waiting(1);
    const generation = await hearRing("woken");
    await agents.report("vm-1", { appliedGeneration: generation, volumes: [] });
    expect((await jsonOf<Volume>(await detach, 200)).status.state).toBe("DETACHED");
    vi.useRealTimers();
    expect((await detachedEvent(fx, "woken")).data).toMatchObject({ drained: true });
  });

  it("two detaches at once both wait, and both answer DETACHED; one event", async () => {
    await attachedVolume(fx, "twice", "vm-1");
    await servingAsFetched();
    const first = fx.call("POST", "/api/v1/volumes/twice/detach");
    const second = fx.call("POST", "/api/v1/volumes/twice/detach");
    await waiting(2);
    expect((await volumes(fx.registry).get("twice"))!.value.status.state).toBe("DETACHING");
    // Each detach bumped the generation; the agent applies the newest.
    const generation = await hearRing("twice");
    expect(generation).toBe(generationOf((await nodes(fx.registry).get("vm-1"))!.value));
    await agents.report("vm-1", { appliedGeneration: generation, volumes: [] });
    const answers = await Promise.all([first, second].map(async (r) => jsonOf<Volume>(await r, 200)));
    expect(answers.map((v) => v.status.state)).toEqual(["DETACHED", "DETACHED"]);
    expect(answers[0]!.status.epoch).toBe(answers[1]!.status.epoch);
    expect((await detachedEvent(fx, "twice")).data).toMatchObject({ drained: true });
  });

  it("force=true drops the leases at once and records that the drain was skipped", async () => {
    const v = await attachedVolume(fx, "forced", "vm-1");
    const detached = await jsonOf<Volume>(
      await fx.call("POST", "/api/v1/volumes/forced/detach?force=true"),
      200,
    );
    expect(detached.status.state).toBe("DETACHED");
    expect(await leaseStates(fx, v)).toEqual(["available", "available"]);
    const event = await detachedEvent(fx, "forced");
    expect(event.data).toMatchObject({ drained: false, reason: "force=true", waitedMs: 0 });
    expect(event.message).toMatch(/without its drain confirmed \(force=true\)/);
  });

  it("refuses a force that is not true or false, and changes nothing", async () => {
    await attachedVolume(fx, "bad-force", "vm-1");
    const res = await fx.call("POST", "/api/v1/volumes/bad-force/detach?force=yes");
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.message).toMatch(/force must be true or false/);
    expect((await volumes(fx.registry).get("bad-force"))!.value.status.state).toBe("ATTACHED");
  });
});

describe("detach does not wait", () => {
  /** Detach `volume` on the short-deadline control plane: DETACHED, its event saying why the drain went unconfirmed. */
  async function detachUndrained(volume: string, reason: string): Promise<void> {
    const detached = await jsonOf<Volume>(await short.call("POST", `/api/v1/volumes/${volume}/detach`), 200);
    expect(detached.status.state).toBe("DETACHED");
    expect((await detachedEvent(short, volume)).data).toMatchObject({ drained: false, reason });
  }

  it("for an agent that does not report its applied generation", async () => {
    // An agent before 0.2: it reports on the deprecated heartbeat route, and never says which generation it applied.
    await shortAgents.join("old-agent");
    const res = await short.app.request("/api/v1/nodes/old-agent/heartbeat", {
      method: "POST",
      headers: {
        authorization: `Bearer ${shortAgents.credential("old-agent")}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ volumes: [] }),
    });
    expect(res.status).toBe(200);
    await attachedVolume(short, "old", "old-agent");
    await detachUndrained("old", "node old-agent's agent does not report the generation it applied");
  });

  it("for an owner that is not READY", async () => {
    await shortAgents.join("doubtful");
    await shortAgents.report("doubtful", { appliedGeneration: 0, volumes: [] });
    await attachedVolume(short, "on-suspect", "doubtful");
    const table = nodes(short.registry);
    const read = (await table.get("doubtful"))!;
    await table.replace({ ...read.value, state: "SUSPECT" }, read.etag);
    await detachUndrained("on-suspect", "node doubtful is SUSPECT");
  });

  it("past the deadline: an owner that never confirms does not keep the volume attached", async () => {
    await shortAgents.join("silent");
    await shortAgents.report("silent", { appliedGeneration: 0, volumes: [] });
    const v = await attachedVolume(short, "unconfirmed", "silent");
    await detachUndrained("unconfirmed", `node silent did not confirm the drain within ${SHORT_DRAIN_MS / 1000} s`);
    expect(await leaseStates(short, v)).toEqual(["available", "available"]);
  });
});
