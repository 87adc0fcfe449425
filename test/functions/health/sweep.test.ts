/**
 * The sweeper over Azurite with a fake clock: silent nodes become SUSPECT
 * then, still silent at their deadline, LOST in the same pass, a lost
 * node's volumes are fenced by the storage service and fail over where
 * their placement rules allow, interrupted attaches are rolled back, and a
 * second pass finds nothing to do. A witness node beats before every pass
 * that judges: without a beat from anyone, nobody is judged.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { Node } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { type SweepReport, sweep } from "../../../functions/health/sweep.ts";
import { DEFAULT_EVENT_RETENTION_DAYS, listEvents } from "../../../functions/registry/events.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { restStatus } from "../../../functions/rest-error.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import {
  agentNodes,
  aheadOfRealTime,
  NO_SECOND_LOOK,
  NOTHING_SWEPT,
  STEPPED_POLICY,
  sweepOnFakeClock,
} from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

const POLICY = STEPPED_POLICY;
let fx: ControlPlaneFixture;
let nowMs = aheadOfRealTime();
let token: IssuedToken;
const { join, heartbeat } = agentNodes(
  () => fx,
  () => token.token,
  () => new Date(nowMs),
);
const reported: unknown[] = [];
/** What happens while the pass waits for its second look; the clock always moves. */
let duringWait: () => Promise<void> = async () => {};

const horizon = () => ({ now: new Date(nowMs), retentionDays: DEFAULT_EVENT_RETENTION_DAYS });

/** The witness beats, then one pass; its second look moves the fake clock. */
async function pass(): Promise<SweepReport> {
  await heartbeat("witness");
  return sweepOnFakeClock(
    controlPlane({
      registry: fx.registry,
      now: () => new Date(nowMs),
      report: (e) => reported.push(e),
    }),
    (ms) => (nowMs += ms),
    async () => {
      await heartbeat("witness");
      await duringWait();
    },
    POLICY,
  );
}

async function node(name: string): Promise<Node> {
  return jsonOf<Node>(await fx.call("GET", `/api/v1/nodes/${name}`), 200);
}

async function volume(name: string): Promise<Volume> {
  return jsonOf<Volume>(await fx.call("GET", `/api/v1/volumes/${name}`), 200);
}

async function createAttached(
  name: string,
  on: string,
  spec: Record<string, unknown>,
): Promise<Attachment> {
  const res = await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: 64 * 1024, ...spec });
  expect(res.status).toBe(201);
  return jsonOf<Attachment>(
    await fx.call("POST", `/api/v1/volumes/${name}/attach`, { node: on }),
    200,
  );
}

function replicaBlob(v: Volume): PageBlobClient {
  const r = v.status.replicas[0]!;
  return fx.blobs
    .getContainerClient(replicaContainerName("pagedisk", r.id))
    .getPageBlobClient(`${v.name}/${r.id}`);
}

async function writeStatus(blob: PageBlobClient, leaseId?: string): Promise<number> {
  try {
    await blob.uploadPages(
      Buffer.alloc(512, 1),
      0,
      512,
      leaseId ? { conditions: { leaseId } } : {},
    );
    return 201;
  } catch (err) {
    return restStatus(err) ?? -1;
  }
}

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs) });
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  await join("witness");
  // The first pass only starts watching: silence counts from it.
  expect((await pass()).path).toBe("first pass: silence counts from now");
});
afterAll(() => fx?.dispose());

describe("node health", () => {
  it("READY -> SUSPECT after suspectAfter -> LOST at its deadline, in one pass; a heartbeat makes it READY", async () => {
    await join("vm-h");
    // Not yet a beat and a half late: not even watched.
    nowMs += 7_000;
    expect(await pass()).toEqual(NOTHING_SWEPT);
    nowMs += 8_000;
    const report = await pass();
    expect(report.suspect).toContain("vm-h");
    expect(report.lost).toContain("vm-h");
    expect((await node("vm-h")).state).toBe("LOST");
    nowMs += 1_000;
    await heartbeat("vm-h");
    expect((await pass()).ready).toEqual(["vm-h"]);
    expect((await node("vm-h")).state).toBe("READY");
    const page = await listEvents(fx.registry, { node: "vm-h" }, { limit: 10 }, horizon());
    const types = page.items.map((e) => e.type);
    expect(types).toEqual(["node-ready", "node-lost", "node-suspect", "node-joined"]);
  });

  it("keeps a suspect that beats before its deadline: SUSPECT, then READY within the pass", async () => {
    await join("vm-s");
    nowMs += 20_000;
    await heartbeat("vm-h");
    duringWait = () => heartbeat("vm-s");
    try {
      const report = await pass();
      expect(report.suspect).toEqual(["vm-s"]);
      expect(report.lost).toEqual([]);
      expect(report.ready).toEqual(["vm-s"]);
    } finally {
      duringWait = async () => {};
    }
    expect((await node("vm-s")).state).toBe("READY");
  });

  it("a node silent past lostAfter in one pass goes through SUSPECT to LOST", async () => {
    await join("vm-q");
    nowMs += 50_000;
    const report = await pass();
    expect(report.suspect).toContain("vm-q");
    expect(report.lost).toContain("vm-q");
    expect((await node("vm-q")).state).toBe("LOST");
  });

  it("judges nobody when no node beats: the path, not every node, is down", async () => {
    await join("vm-p");
    await heartbeat("vm-p");
    nowMs += 50_000;
    // No witness this time: a direct pass.
    const report = await sweep(
      controlPlane({ registry: fx.registry, now: () => new Date(nowMs), report: (e) => reported.push(e) }),
      POLICY,
      NO_SECOND_LOOK,
    );
    expect(report.lost).toEqual([]);
    expect(report.path).toMatch(/no heartbeat from any node/);
    expect((await node("vm-p")).state).toBe("READY");
    // Beats flow again (the witness's): silence counts from this pass, so vm-p, silent for 50 s,
    // past lostAfter, is not LOST at once.
    const back = await pass();
    expect(back.path).toBe("heartbeats flow again: silence counts from now");
    expect(back.lost).not.toContain("vm-p");
    expect(back.suspect).not.toContain("vm-p");
    expect((await node("vm-p")).state).toBe("READY");
  });
});

describe("fencing and failover", () => {
  let auto: Attachment;
  let manual: Attachment;
  let pinned: Attachment;
  let report: SweepReport;

  beforeAll(async () => {
    for (const name of ["src", "n-a", "n-b", "n-c"]) await join(name);
    expect((await fx.call("POST", "/api/v1/nodes/n-c/cordon")).status).toBe(200);
    // Preferred n-c is cordoned, so n-b (preferred next, and required) must win over idle n-a.
    auto = await createAttached("v-auto", "src", {
      requiredNodes: ["src", "n-b", "n-c"],
      preferredNodes: ["n-c", "n-b"],
    });
    manual = await createAttached("v-manual", "src", { failover: "manual" });
    pinned = await createAttached("v-pinned", "src", { requiredNodes: ["src"] });
    // Everyone but src keeps beating; src goes silent.
    for (let t = 0; t < 5; t++) {
      nowMs += 10_000;
      await heartbeat("n-a", "n-b", "n-c", "vm-p");
    }
    report = await pass();
  });

  it("marks src LOST and fences all three of its volumes in one pass", async () => {
    expect(report).toEqual({
      ...NOTHING_SWEPT,
      suspect: ["src"],
      lost: ["src"],
      fenced: ["v-auto", "v-manual", "v-pinned"],
      failedOver: ["v-auto"],
      detached: ["v-manual"],
      waiting: ["v-pinned"],
    });
    expect((await node("src")).state).toBe("LOST");
    const fenced = { type: "volume-fenced" };
    const first = await listEvents(fx.registry, fenced, { limit: 10 }, horizon());
    expect(first.items.map((e) => e.volume).sort()).toEqual(["v-auto", "v-manual", "v-pinned"]);
  });

  it("fails the automatic volume over to the best eligible node, under a new lease", async () => {
    const v = await volume("v-auto");
    expect(v.status).toMatchObject({ state: "ATTACHED", ownerNode: "n-b", epoch: auto.epoch + 2 });
    const record = (await volumes(fx.registry).get("v-auto"))!.value;
    expect(record.leaseId).not.toBe(auto.leaseId);
    const blob = replicaBlob(v);
    expect((await blob.getProperties()).leaseState).toBe("leased");
    // The lost writer is fenced by the service, with or without its old lease id.
    expect(await writeStatus(blob, auto.leaseId)).toBe(412);
    expect(await writeStatus(blob)).toBe(412);
    expect(await writeStatus(blob, record.leaseId!)).toBe(201);
  });

  it("detaches the manual volume, leaving no lease and the old writer fenced", async () => {
    const v = await volume("v-manual");
    expect(v.status).toMatchObject({ state: "DETACHED", ownerNode: null, epoch: manual.epoch + 1 });
    const blob = replicaBlob(v);
    expect((await blob.getProperties()).leaseState).not.toBe("leased");
    expect(await writeStatus(blob, manual.leaseId)).toBe(412);
  });

  it("keeps a volume with no eligible node FENCING, then fails it over when one is back", async () => {
    const v = await volume("v-pinned");
    expect(v.status).toMatchObject({ state: "FENCING", ownerNode: "src" });
    expect(await writeStatus(replicaBlob(v), pinned.leaseId)).toBe(412);
    await heartbeat("src");
    const next = await pass();
    expect(next.ready).toEqual(["src"]);
    expect(next.failedOver).toEqual(["v-pinned"]);
    const after = await volume("v-pinned");
    expect(after.status).toMatchObject({
      state: "ATTACHED",
      ownerNode: "src",
      epoch: pinned.epoch + 2,
    });
    expect(await writeStatus(replicaBlob(after), pinned.leaseId)).toBe(412);
  });

  it("finds nothing to do on the next pass", async () => {
    expect(await pass()).toEqual(NOTHING_SWEPT);
    expect(reported).toEqual([]);
  });
});

describe("interrupted steps", () => {
  it("rolls back an attach left ATTACHING by a crash, once stuck, and drops its lease", async () => {
    await heartbeat("n-a", "n-b", "n-c", "src", "vm-p");
    const res = await fx.call("POST", "/api/v1/volumes", { name: "v-crash", sizeBytes: 4096 });
    expect(res.status).toBe(201);
    // The claim of attach step 1 and the lease of step 2, then a crash before step 3.
    const table = volumes(fx.registry);
    const read = (await table.get("v-crash"))!;
    const leaseId = "00000000-0000-4000-8000-000000000001";
    await table.replace(
      {
        ...read.value,
        status: { ...read.value.status, state: "ATTACHING", ownerNode: "n-a", epoch: 1 },
        leaseId,
        updatedAt: new Date(nowMs).toISOString(),
      },
      read.etag,
    );
    const blob = replicaBlob(await volume("v-crash"));
    await blob.getBlobLeaseClient(leaseId).acquireLease(-1);

    nowMs += 30_000;
    await heartbeat("n-a", "n-b", "n-c", "src", "vm-p");
    expect((await pass()).recovered).toEqual([]);
    nowMs += 30_000;
    await heartbeat("n-a", "n-b", "n-c", "src", "vm-p");
    expect((await pass()).recovered).toEqual(["v-crash"]);
    expect((await volume("v-crash")).status).toMatchObject({ state: "DETACHED", ownerNode: null });
    expect((await blob.getProperties()).leaseState).not.toBe("leased");
    expect(await pass()).toEqual(NOTHING_SWEPT);
  });
});
