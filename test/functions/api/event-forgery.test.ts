/**
 * A node's report may carry only events an agent reports, about volumes
 * the registry made it the writer of, at that epoch, and pools those
 * volumes use (functions/health/reported-events.ts). Over Azurite, a node
 * `rogue` that writes one volume of its own tries every forgery we could
 * think of against the volumes of others; each is refused with a 4xx error
 * body and leaves every table (the node rows, the volumes, the event log)
 * as it was. An honest agent's event about an attachment that has just
 * ended is still heard, and a refusal names the events it refuses so that
 * the agent can drop them (test/control/report-loop.test.ts).
 *
 * Whether a node wrote a volume is the registry's record, never an event:
 * a `volume-attached` in the log, even one that looks like the control
 * plane's own, does not make a node's `replicas-diverged` heard.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event } from "../../../contract/event.ts";
import type { ReportedEvent } from "../../../contract/node.ts";
import { REPLICAS_DIVERGED } from "../../../contract/signals.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { replicasDiverged } from "../../../functions/health/diverged.ts";
import { failuresReportedSince } from "../../../functions/health/reported-failures.ts";
import {
  DEFAULT_EVENT_RETENTION_DAYS,
  listEvents,
  recordEvent,
  recordReportedEvents,
} from "../../../functions/registry/events.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { agentNodes } from "../agents.ts";
import { type ControlPlaneFixture, EPOCH_MS, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

let fx: ControlPlaneFixture;
let token: IssuedToken;
const agents = agentNodes(
  () => fx,
  () => token.token,
);

/** Replica ids of each volume, by pool. */
const replicaOn = new Map<string, Map<string, string>>();

beforeAll(async () => {
  fx = await startControlPlane();
  for (const pool of ["p1", "p2", "p3"]) await fx.addPool(pool, `${pool}-disks`);
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  for (const node of ["owner", "rogue", "other"]) await agents.join(node);
  // The victims: owner's. rogue writes one volume of its own, on p1 only.
  await create("victim", ["p1", "p2"]);
  await attach("victim", "owner");
  await create("rogue-vol", ["p1"]);
  await attach("rogue-vol", "rogue");
  // A record written before volumes kept their writers: attached to owner, no `writers`.
  await create("legacy", ["p1", "p2"]);
  await attach("legacy", "owner");
  const table = volumes(fx.registry);
  const read = (await table.get("legacy"))!;
  const { writers: _dropped, ...status } = read.value.status;
  await table.replace({ ...read.value, status }, read.etag);
  expect((await table.get("legacy"))!.value.status).not.toHaveProperty("writers");
});
afterAll(() => fx?.dispose());

async function create(name: string, pools: string[]): Promise<void> {
  const body = { name, sizeBytes: 1024 * 1024, replicas: pools.length, pools };
  const v = await jsonOf<Volume>(await fx.call("POST", "/api/v1/volumes", body), 201);
  replicaOn.set(name, new Map(v.status.replicas.map((r) => [r.pool, r.id])));
}

async function attach(name: string, node: string): Promise<void> {
  await jsonOf(await fx.call("POST", `/api/v1/volumes/${name}/attach`, { node }), 200);
}

async function detach(name: string): Promise<void> {
  await jsonOf(await fx.call("POST", `/api/v1/volumes/${name}/detach`, {}), 200);
}

const epochOf = async (name: string) => (await volumes(fx.registry).get(name))!.value.status.epoch;
const replica = (volume: string, pool: string) => replicaOn.get(volume)!.get(pool)!;

/** A report (or a deprecated heartbeat) of `node` with `body`, as its agent would send it. */
async function send(node: string, body: unknown, route: "report" | "heartbeat" = "report"): Promise<Response> {
  return fx.app.request(`/api/v1/nodes/${node}/${route}`, {
    method: "POST",
    headers: { authorization: `Bearer ${agents.credential(node)}`, "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** Every event in the log, at the fixture's clock. */
async function allEvents(): Promise<Event[]> {
  const horizon = { now: fx.cp.now(), retentionDays: DEFAULT_EVENT_RETENTION_DAYS };
  return (await listEvents(fx.registry, {}, { limit: 500 }, horizon)).items;
}

/**
 * `body` sent by `node` is refused with `status` (and `code`, if given),
 * in an error body, and leaves every table and blob as it was.
 */
async function refused(
  node: string,
  body: unknown,
  status: number,
  code?: string,
  route: "report" | "heartbeat" = "report",
): Promise<{ code: string; message: string; details?: unknown }> {
  const before = await fx.snapshot();
  const err = await errorOf(await send(node, body, route), status);
  if (code !== undefined) expect(err.code).toBe(code);
  expect(await fx.snapshot()).toEqual(before);
  return err;
}

const failed = (volume: string, epoch: number, extra: Partial<ReportedEvent> = {}): ReportedEvent => ({
  type: "volume-failed",
  volume,
  message: `volume ${volume} failed`,
  data: { epoch },
  ...extra,
});

const storageFailure = (volume: string, pool: string, epoch: number, replicaId: string): ReportedEvent => ({
  type: "storage-failure",
  volume,
  pool,
  message: `replica ${replicaId} of volume ${volume} on pool ${pool} taken offline`,
  data: { epoch, replica: replicaId },
});

describe("a report's events", () => {
  it("may not be control-plane events about another node's volumes (volume-attached, volume-deleted)", async () => {
    const epoch = await epochOf("victim");
    const err = await refused(
      "rogue",
      {
        events: [
          { type: "volume-attached", volume: "victim", message: "victim attached to rogue", data: { epoch: epoch + 1 } },
          { type: "volume-deleted", volume: "victim", message: "victim deleted" },
        ],
      },
      422,
      "EventRefused",
    );
    expect(err.details).toEqual({
      refused: [
        { index: 0, reason: "volume-attached is not an event agents report" },
        { index: 1, reason: "volume-deleted is not an event agents report" },
      ],
    });
  });

  it("may not be of a type no agent reports, even about the node's own volume", async () => {
    const epoch = await epochOf("rogue-vol");
    for (const type of ["throttled", "node-lost", "replica-offline", "replica-online", "pool-health-changed"]) {
      await refused("rogue", { events: [failed("rogue-vol", epoch, { type })] }, 422, "EventRefused");
    }
  });

  it("may not take a replica of another node's volume offline, nor mark its pool", async () => {
    const epoch = await epochOf("victim");
    const since = new Date(EPOCH_MS);
    await refused("rogue", { events: [storageFailure("victim", "p2", epoch, replica("victim", "p2"))] }, 422);
    await refused(
      "rogue",
      {
        events: [
          {
            type: "replica-offline",
            volume: "victim",
            pool: "p2",
            message: "replica offline",
            data: { replica: replica("victim", "p2") },
          },
        ],
      },
      422,
    );
    await refused("rogue", { events: [{ type: REPLICAS_DIVERGED, volume: "victim", message: "diverged", data: { epoch } }] }, 422);
    expect((await failuresReportedSince(fx.registry, since, fx.cp.now())).has("p2")).toBe(false);
    const v = (await volumes(fx.registry).get("victim"))!.value;
    expect(v.status.replicas.map((r) => r.state)).toEqual(["ONLINE", "ONLINE"]);
  });

  it("may name only pools and replicas of the volume it names", async () => {
    const epoch = await epochOf("rogue-vol");
    const own = replica("rogue-vol", "p1");
    // Its own replica, placed on a pool it is not on.
    await refused("rogue", { events: [storageFailure("rogue-vol", "p2", epoch, own)] }, 422);
    // Another volume's replica, on a pool its own volume uses.
    await refused("rogue", { events: [storageFailure("rogue-vol", "p1", epoch, replica("victim", "p1"))] }, 422);
    // A pool none of its volumes use, on an event of another type.
    const err = await refused("rogue", { events: [failed("rogue-vol", epoch, { pool: "p3" })] }, 422);
    expect(err.details).toEqual({ refused: [{ index: 0, reason: "volume rogue-vol has no replica on pool p3" }] });
    // A storage-failure that names no replica or no pool blames nobody in particular: refused too.
    await refused("rogue", { events: [{ ...storageFailure("rogue-vol", "p1", epoch, own), data: { epoch } }] }, 422);
    await refused("rogue", { events: [{ ...storageFailure("rogue-vol", "p1", epoch, own), pool: undefined }] }, 422);
  });

  it("must name a volume and an epoch at which the registry made the node its writer", async () => {
    const epoch = await epochOf("rogue-vol");
    // No volume, no epoch, an epoch of the wrong kind.
    await refused("rogue", { events: [{ type: "volume-failed", message: "failed", data: { epoch } }] }, 422);
    await refused("rogue", { events: [failed("rogue-vol", epoch, { data: {} })] }, 422);
    await refused("rogue", { events: [failed("rogue-vol", epoch, { data: { epoch: "1" } })] }, 422);
    await refused("rogue", { events: [failed("rogue-vol", epoch, { data: { epoch: 0 } })] }, 422);
    // Its own volume at an epoch it never held.
    await refused("rogue", { events: [failed("rogue-vol", epoch + 1)] }, 422);
    await refused("rogue", { events: [failed("rogue-vol", epoch - 1)] }, 422);
    // Another's volume at that volume's epoch, and a volume that does not exist, refused in the same words.
    const foreign = await refused("rogue", { events: [failed("victim", await epochOf("victim"))] }, 422);
    const missing = await refused("rogue", { events: [failed("no-such-volume", 1)] }, 422);
    expect(foreign.details).toEqual({ refused: [{ index: 0, reason: `node rogue did not write volume victim at epoch ${await epochOf("victim")}` }] });
    expect(missing.details).toEqual({ refused: [{ index: 0, reason: "node rogue did not write volume no-such-volume at epoch 1" }] });
  });

  it("about a volume that moved on: heard for the epoch the node wrote, refused for any other", async () => {
    await create("moved", ["p1"]);
    await attach("moved", "owner");
    const first = await epochOf("moved");
    await detach("moved");
    const detaching = first + 1;
    await attach("moved", "other");
    const second = await epochOf("moved");
    expect(second).toBe(first + 2);
    // Stale: the epochs owner did not write, and the one other did not.
    await refused("owner", { events: [failed("moved", second)] }, 422);
    await refused("owner", { events: [failed("moved", detaching)] }, 422);
    await refused("other", { events: [failed("moved", first)] }, 422);
    // An honest agent's event about the attachment that has just ended is its own.
    const res = await send("owner", { events: [failed("moved", first)] });
    expect(res.status).toBe(200);
    const recorded = (await allEvents()).filter((e) => e.volume === "moved" && e.type === "volume-failed");
    expect(recorded).toEqual([expect.objectContaining({ node: "owner", source: "node", data: { epoch: first } })]);
  });

  it("are refused whole: one forged event among honest ones records nothing, and is named by its index", async () => {
    const epoch = await epochOf("rogue-vol");
    const own = replica("rogue-vol", "p1");
    const honest = Array.from({ length: 19 }, (_, i) => {
      const e = storageFailure("rogue-vol", "p1", epoch, own);
      return { ...e, message: `${e.message} (${i})` };
    });
    const volumesReport = [{ volume: "rogue-vol", epoch, state: "DEGRADED" as const, replicas: [{ id: own, state: "OFFLINE" as const }] }];
    const err = await refused(
      "rogue",
      { volumes: volumesReport, events: [...honest, failed("victim", await epochOf("victim"))] },
      422,
      "EventRefused",
    );
    expect(err.details).toEqual({ refused: [{ index: 19, reason: expect.stringContaining("did not write volume victim") }] });
    expect(err.message).toContain("nothing was recorded");
  });

  it("are refused on the deprecated heartbeat route too", async () => {
    await refused("rogue", { events: [failed("victim", await epochOf("victim"))] }, 422, "EventRefused", "heartbeat");
  });

  it("are bounded: more than 20, or data too large to be an agent's, is refused before anything is written", async () => {
    const epoch = await epochOf("rogue-vol");
    await refused("rogue", { events: Array.from({ length: 21 }, () => failed("rogue-vol", epoch)) }, 400, "InvalidRequest");
    const huge = failed("rogue-vol", epoch, { data: { epoch, pad: "x".repeat(40_000) } });
    await refused("rogue", { events: [huge] }, 400, "InvalidRequest");
  });

  it("may not say who recorded them, nor which node they are from", async () => {
    const epoch = await epochOf("rogue-vol");
    await refused("rogue", { events: [{ ...failed("rogue-vol", epoch), source: "control-plane" }] }, 400, "InvalidRequest");
    await refused("rogue", { events: [{ ...failed("rogue-vol", epoch), node: "owner" }] }, 400, "InvalidRequest");
  });

  it("are documented: both report routes answer EventRefused with 422", async () => {
    const doc = (await (await fx.app.request("/api/v1/openapi.json")).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, { description: string }> }>>;
    };
    for (const route of ["report", "heartbeat"]) {
      expect(doc.paths[`/api/v1/nodes/{name}/${route}`]!.post!.responses["422"]!.description).toContain(
        "EventRefused",
      );
    }
  });

  it("when entitled, are recorded as the node's word, beside the control plane's own", async () => {
    const epoch = await epochOf("rogue-vol");
    const res = await send("rogue", { events: [storageFailure("rogue-vol", "p1", epoch, replica("rogue-vol", "p1"))] });
    expect(res.status).toBe(200);
    const events = (await allEvents()).filter((e) => e.volume === "rogue-vol");
    expect(events.map((e) => [e.type, e.node, e.source])).toEqual([
      ["storage-failure", "rogue", "node"],
      ["volume-attached", "rogue", "control-plane"],
      ["volume-created", undefined, "control-plane"],
    ]);
  });
});

describe("who wrote a volume, for a repair decision", () => {
  const diverged = (epoch: number): ReportedEvent => ({
    type: REPLICAS_DIVERGED,
    volume: "legacy",
    message: "writes in flight reached some replicas only",
    data: { epoch },
  });

  it("is not changed by a forged volume-attached in the same report", async () => {
    const epoch = await epochOf("legacy");
    const forged = { type: "volume-attached", volume: "legacy", message: "legacy attached to rogue", data: { epoch } };
    await refused("rogue", { events: [forged, diverged(epoch)] }, 422, "EventRefused");
    const v = (await volumes(fx.registry).get("legacy"))!.value;
    expect(v.status.replicas.map((r) => [r.state, r.stale ?? false])).toEqual([
      ["ONLINE", false],
      ["ONLINE", false],
    ]);
  });

  it("is the registry's record, not the event log, even when a volume-attached there names the node", async () => {
    const epoch = await epochOf("legacy");
    // As a forged event could have been recorded before reports were checked, and looking
    // exactly like the control plane's own.
    await recordEvent(fx.registry, fx.cp.now(), {
      type: "volume-attached",
      volume: "legacy",
      node: "rogue",
      message: `volume legacy attached to rogue (epoch ${epoch})`,
      data: { epoch },
    });
    const table = volumes(fx.registry);
    const before = (await table.get("legacy"))!;
    expect(await replicasDiverged(fx.cp, "rogue", diverged(epoch))).toBe("not-the-writer");
    expect((await table.get("legacy"))!.etag).toBe(before.etag);
    // The writer the record names (the owner, at its epoch) is heard.
    expect(await replicasDiverged(fx.cp, "owner", diverged(epoch))).toBe("applied");
    expect((await table.get("legacy"))!.value.status.replicas.map((r) => r.state)).toEqual(["ONLINE", "OFFLINE"]);
    expect(fx.reported).toEqual([]);
  });
});

describe("a pool's reported failures", () => {
  it("count a replica-offline only when the control plane recorded it", async () => {
    const since = fx.cp.now();
    const offline = { type: "replica-offline", pool: "p3", message: "replica offline", data: { replica: "0123456789ab" } };
    // Past the door (as before reports were checked), a node's replica-offline is still its word only.
    await recordReportedEvents(fx.registry, fx.cp.now(), "rogue", [offline]);
    expect((await failuresReportedSince(fx.registry, since, fx.cp.now())).has("p3")).toBe(false);
    await recordEvent(fx.registry, fx.cp.now(), offline);
    expect((await failuresReportedSince(fx.registry, since, fx.cp.now())).get("p3")).toMatchObject({
      type: "replica-offline",
    });
  });
});
