/**
 * What node liveness costs, counted where the services see it: every
 * request from the control plane and the agents to Azurite's Table
 * endpoint goes through a counting proxy, and every API request through a
 * counting middleware in front of the app.
 *
 * - A beat is one Table transaction and no API request.
 * - A report with volume reports and no events is two: the read that
 *   checks the node's credential and the write of its row (its answer is
 *   the node's desired generation, read from that row). Events add one read
 *   per volume they name (the record that says whether the node wrote it)
 *   and one batch per index partition of the event log they touch (the
 *   report's volumes, types and node, and `all`), not one per event; a
 *   refused report is the credential's read alone.
 * - A sweeper pass over a healthy cluster reads the same number of times
 *   whatever the number of nodes (one page of each list), and writes one
 *   row: its own state.
 */
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IssuedToken } from "../../../contract/token.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { DEFAULT_SWEEP_POLICY, sweep } from "../../../functions/health/sweep.ts";
import type { FaultProxy } from "../../harness/fault-proxy.ts";
import { recordTableRequests, type TableRequest } from "../../harness/table-requests.ts";
import { agentNodes, NO_SECOND_LOOK, NOTHING_SWEPT } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startProxiedControlPlane } from "../fixture.ts";

/**
 * Noon (UTC) tomorrow: ahead of the real time, so that what beats claim
 * counts (registry/liveness.ts `lastBeatOf`), and far from midnight, so that
 * the pool-failure window of every pass lies within one day's event table.
 */
const today = new Date();
let nowMs = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() + 1, 12);
const clock = () => new Date(nowMs);

/** The control plane, its Table endpoint (the liveness table's too) behind `proxy`. */
let fx: ControlPlaneFixture;
let proxy: FaultProxy;
/** Every Table request through the proxy, as it arrives. */
let seen: TableRequest[];
/** The app behind a middleware that counts what reaches it; agents call it. */
let counted: ControlPlaneFixture;
let apiRequests = 0;
let token: IssuedToken;
const agents = agentNodes(
  () => counted,
  () => token.token,
  clock,
);
/** The nodes of the cluster, in the order they joined. */
const cluster = new Set<string>();

beforeAll(async () => {
  ({ fx, proxy } = await startProxiedControlPlane({ now: clock }));
  ({ requests: seen } = recordTableRequests(proxy));
  const api = new Hono();
  api.use("*", async function countApiRequests(_c, next) {
    apiRequests++;
    await next();
  });
  api.route("/", fx.app);
  counted = { ...fx, app: api };
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  await fx.addPool("p1");
  await join("vm-1");
});
afterAll(() => fx?.dispose());

/** Join `name` as its agent does, fetch its desired state, and land its first beat. */
async function join(name: string): Promise<void> {
  await agents.join(name);
  await agents.desired(name);
  cluster.add(name);
  await beatAs(name);
}

/** One beat of `name`, conditional on its last ETag, claiming the test's clock; it lands. */
async function beatAs(name: string): Promise<void> {
  expect(await agents.nextBeat(name), `${name}'s beat`).toBe("landed");
}

/** What `action` cost: Table requests, by kind, and API requests. */
async function costOf(action: () => Promise<void>) {
  const from = seen.length;
  const apiBefore = apiRequests;
  await action();
  const requests = seen.slice(from);
  return {
    table: requests.length,
    reads: requests.filter((r) => r.method === "GET").map((r) => r.table),
    writes: requests.filter((r) => r.method !== "GET").map((r) => r.table),
    api: apiRequests - apiBefore,
  };
}

type ReportBody = Parameters<typeof agents.report>[1];

/** One report of `name` through the API. */
async function report(body: ReportBody, name = "vm-1"): Promise<void> {
  await agents.report(name, body);
}

const volumes = Array.from({ length: 16 }, (_, i) => ({
  volume: `v-${i}`,
  epoch: i + 1,
  state: "SERVING" as const,
}));

describe("a beat", () => {
  it("is one Table transaction, on the Table endpoint, and no API request", async () => {
    expect(new URL((await agents.desired("vm-1")).liveness.url).origin).toBe(proxy.origin);
    const cost = await costOf(() => beatAs("vm-1"));
    expect(cost).toEqual({ table: 1, reads: [], writes: ["liveness"], api: 0 });
  });
});

describe("a report", () => {
  it("is 2 with volume reports and no events: the credential's read and the row's write", async () => {
    const cost = await costOf(() => report({ agentVersion: "1.0.0", volumes }));
    expect(cost).toEqual({ table: 2, reads: ["nodes"], writes: ["nodes"], api: 1 });
    expect((await costOf(() => report({ volumes: [] }))).table).toBe(2);
  });

  it("costs one more per volume the events name and per index partition they touch, however many events", async () => {
    // Events are heard only from the writer of their volume: vm-1 writes v-1 and v-2 meanwhile.
    const written = new Map<string, { epoch: number; replica: string }>();
    for (const volume of ["v-1", "v-2"]) {
      await jsonOf(await fx.call("POST", "/api/v1/volumes", { name: volume, sizeBytes: 64 * 1024 }), 201);
      const { epoch } = await jsonOf<{ epoch: number }>(
        await fx.call("POST", `/api/v1/volumes/${volume}/attach`, { node: "vm-1" }),
        200,
      );
      const shown = await jsonOf<{ status: { replicas: Array<{ id: string }> } }>(
        await fx.call("GET", `/api/v1/volumes/${volume}`),
        200,
      );
      written.set(volume, { epoch, replica: shown.status.replicas[0]!.id });
    }
    const failed = (i: number, volume = "v-1") => ({
      type: "volume-failed",
      volume,
      message: `failed ${i}`,
      data: { epoch: written.get(volume)!.epoch },
    });
    const plain = (await costOf(() => report({ volumes }))).table;
    const more = async (body: ReportBody) => (await costOf(() => report(body))).table - plain;
    // The record of v-1; then all, v|v-1, n|vm-1, t|volume-failed
    const one = await costOf(() => report({ volumes, events: [failed(1)] }));
    expect(one.reads.sort()).toEqual(["nodes", "volumes"]);
    expect(one.table - plain).toBe(5);
    const twenty = Array.from({ length: 20 }, (_, i) => failed(i));
    expect(await more({ volumes, events: twenty })).toBe(5);
    // Two volumes and two types: their two records; all, v|v-1, v|v-2, n|vm-1, t|volume-failed, t|storage-failure
    const mixed = twenty.map((e, i) => {
      const volume = `v-${1 + (i % 2)}`;
      const { epoch, replica } = written.get(volume)!;
      return i < 10
        ? { ...e, volume, data: { epoch } }
        : { ...e, type: "storage-failure", volume, pool: "p1", data: { epoch, replica } };
    });
    expect(await more({ volumes, events: mixed })).toBe(8);
    for (const volume of written.keys()) {
      await jsonOf(await fx.call("POST", `/api/v1/volumes/${volume}/detach`, {}), 200);
      expect((await fx.call("DELETE", `/api/v1/volumes/${volume}`)).status).toBe(204);
    }
  });

  it("is 1 when refused, which writes nothing", async () => {
    const credential = agents.credential("vm-1")!;
    const cost = await costOf(async () => {
      const res = await counted.app.request("/api/v1/nodes/vm-1/report", {
        method: "POST",
        headers: {
          authorization: `Bearer ${credential.slice(0, -1)}${credential.endsWith("A") ? "B" : "A"}`,
          "content-type": "application/json",
        },
        body: "{}",
      });
      expect(res.status).toBe(401);
    });
    expect(cost).toEqual({ table: 1, reads: ["nodes"], writes: [], api: 1 });
  });
});

describe("a sweeper pass over a healthy cluster", () => {
  const cp = () => controlPlane({ registry: fx.registry, now: clock, report: (err) => fx.reported.push(err) });

  /** A sweep interval after the last pass, every node beats. */
  async function beatAll(): Promise<void> {
    nowMs += DEFAULT_SWEEP_POLICY.sweepIntervalMs;
    for (const name of cluster) await beatAs(name);
  }

  /**
   * Node `name` joins and serves a volume of its own, as its agent does:
   * the attach rings its row, so it fetches its desired state again, and
   * reports the volume served with its replica ONLINE.
   */
  async function joinServing(name: string): Promise<void> {
    await join(name);
    const volume = `v-${name}`;
    await jsonOf(await fx.call("POST", "/api/v1/volumes", { name: volume, sizeBytes: 64 * 1024 }), 201);
    await jsonOf(await fx.call("POST", `/api/v1/volumes/${volume}/attach`, { node: name }), 200);
    expect(await agents.nextBeat(name)).toBe("rung");
    const desired = await agents.desired(name);
    const [served] = desired.attachments;
    await report(
      {
        appliedGeneration: desired.generation,
        volumes: [
          {
            volume,
            epoch: served!.epoch,
            state: "SERVING",
            replicas: served!.replicas.map((r) => ({ id: r.id, state: "ONLINE" })),
          },
        ],
      },
      name,
    );
  }

  beforeAll(async () => {
    // vm-1 reported volumes that do not exist: it leaves, and nodes serving volumes of their own join.
    const removed = await fx.call("DELETE", "/api/v1/nodes/vm-1");
    expect(removed.status).toBe(204);
    cluster.delete("vm-1");
    await joinServing("vm-h1");
    // The first pass only starts watching, and looks for event tables past their retention.
    await beatAll();
    const first = await sweep(cp(), DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK);
    expect(first.path).toBe("first pass: silence counts from now");
  });

  /**
   * Its reads:
   * - its own state (`control`);
   * - the liveness table and the nodes, one page each (a page holds 1,000);
   * - the pools, and the window of failures reported against them: one
   *   range query per failure type (`storage-failure`, `replica-offline`)
   *   in the day's event table;
   * - the volumes, one page, and the owner index, one page (kept in line
   *   with them: registry/owners.ts);
   * - the pools again, for releases to advance.
   * The agents' SAS policy is read on a first pass only (after that its
   * expiry is in the state), pools are probed on the Blob endpoint, and the
   * repair of a healthy volume reads nothing more.
   */
  const READS = ["control", "liveness", "nodes", "pools", "events", "events", "volumes", "owners", "pools"];

  it("reads 9 times and writes its own state only, with 1, 4 or 8 nodes each serving a volume", async () => {
    const day = new Date(nowMs).toISOString().slice(0, 10).replaceAll("-", "");
    const expected = {
      table: READS.length + 1,
      reads: READS.map((t) => (t === "events" ? `events${day}` : t)).sort(),
      writes: ["control"],
      api: 0,
    };
    for (const size of [1, 4, 8]) {
      while (cluster.size < size) await joinServing(`vm-h${cluster.size + 1}`);
      await beatAll();
      const cost = await costOf(async () => {
        expect(await sweep(cp(), DEFAULT_SWEEP_POLICY, NO_SECOND_LOOK)).toEqual(NOTHING_SWEPT);
      });
      expect({ ...cost, reads: [...cost.reads].sort() }, `${size} nodes`).toEqual(expected);
    }
    expect(fx.reported).toEqual([]);
  });
});
