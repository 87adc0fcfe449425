/**
 * What node liveness costs, counted where the services see it: every
 * request from the control plane and the agents to Azurite's Table
 * endpoint goes through a counting proxy, and every API request through a
 * counting middleware in front of the app.
 *
 * - A beat is one Table transaction and no API request.
 * - A report with volume reports and no events is two: the read that
 *   checks the node's credential and the write of its row (its answer is
 *   the node's desired generation, read from that row). Events add one batch
 *   per index partition of the event log they touch (the report's volumes,
 *   types and node, and `all`), not one per event; a refused report is the
 *   credential's read alone.
 * - A sweeper pass over a healthy cluster reads the same number of times
 *   whatever the number of nodes (one page of each list), and writes one
 *   row: its own state.
 */
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { beat } from "../../../agent/control/liveness-beat.ts";
import type { DesiredState, JoinResponse } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { createApp } from "../../../functions/app.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { DEFAULT_SWEEP_POLICY, sweep } from "../../../functions/health/sweep.ts";
import { issueAdminKey } from "../../../functions/registry/admin-keys.ts";
import { openRegistry, type Registry } from "../../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../../harness/fault-proxy.ts";
import { NOTHING_SWEPT } from "../agents.ts";

/**
 * Noon (UTC) tomorrow: ahead of the real time, so that what beats claim
 * counts (registry/liveness.ts `lastBeatOf`), and far from midnight, so that
 * the pool-failure window of every pass lies within one day's event table.
 */
const today = new Date();
let nowMs = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() + 1, 12);
const clock = () => new Date(nowMs);

let azurite: Azurite;
let proxy: FaultProxy;
let registry: Registry;
/** The app behind a middleware that counts what reaches it. */
let api: Hono;
let apiRequests = 0;
let admin: Record<string, string>;
let token: string;
const reported: unknown[] = [];

/** One Table request as the proxy saw it. */
interface TableRequest {
  method: string;
  /** The table it is about (or `Tables`, `$batch` for service-level paths). */
  table: string;
}
let seen: TableRequest[] = [];

/** The node's credential and where it beats, with the ETag its next beat is conditional on. */
interface Agent {
  credential: string;
  url: string;
  etag: string;
}
const agents = new Map<string, Agent>();

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  proxy = await startFaultProxy(azurite.tableEndpoint!);
  proxy.onRequest((req) => {
    const last = decodeURIComponent(req.url.pathname.split("/").at(-1) ?? "");
    seen.push({ method: req.method, table: last.replace(/\(.*\)$/, "") });
  });
  // The same account, with its Table endpoint (the liveness table's too) behind the proxy.
  const viaProxy = azurite.connectionString.replace(
    /TableEndpoint=[^;]+/,
    `TableEndpoint=${proxy.blobEndpoint}`,
  );
  registry = await openRegistry(viaProxy);
  const app = createApp({ registry, now: clock, report: (err) => reported.push(err) });
  api = new Hono();
  api.use("*", async function countApiRequests(_c, next) {
    apiRequests++;
    await next();
  });
  api.route("/", app);
  const { key } = await issueAdminKey(registry, new Date());
  admin = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const res = await api.request("/api/v1/tokens", { method: "POST", headers: admin, body: "{}" });
  token = ((await res.json()) as IssuedToken).token;
  const pool = await api.request("/api/v1/pools", {
    method: "POST",
    headers: admin,
    body: JSON.stringify({
      name: "p1",
      auth: { kind: "connectionString", connectionString: azurite.connectionString },
    }),
  });
  expect(pool.status).toBe(201);
  await join("vm-1");
});
afterAll(async () => {
  await proxy?.close();
  await azurite?.dispose();
});

/** Join `name` as its agent does, fetch its desired state, and land its first beat. */
async function join(name: string): Promise<void> {
  const res = await api.request("/api/v1/nodes/join", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  expect(res.status).toBe(201);
  const { credential } = (await res.json()) as JoinResponse;
  const desired = await api.request(`/api/v1/nodes/${name}/desired`, {
    headers: { authorization: `Bearer ${credential}` },
  });
  const { liveness } = (await desired.json()) as DesiredState;
  agents.set(name, { credential, url: liveness.url, etag: liveness.etag });
  await beatAs(name);
}

/** One beat of `name`, conditional on its last ETag, claiming the test's clock; it lands. */
async function beatAs(name: string): Promise<void> {
  const agent = agents.get(name)!;
  const outcome = await beat(agent.url, agent.etag, { at: clock().toISOString() });
  if (outcome.kind !== "landed") throw new Error(`${name}'s beat: ${JSON.stringify(outcome)}`);
  agent.etag = outcome.etag;
}

/** What `action` cost: Table requests, by kind, and API requests. */
async function costOf(action: () => Promise<void>) {
  seen = [];
  const apiBefore = apiRequests;
  await action();
  return {
    table: seen.length,
    reads: seen.filter((r) => r.method === "GET").map((r) => r.table),
    writes: seen.filter((r) => r.method !== "GET").map((r) => r.table),
    api: apiRequests - apiBefore,
  };
}

/** One report of `name` through the API. */
async function report(body: unknown, name = "vm-1"): Promise<void> {
  const res = await api.request(`/api/v1/nodes/${name}/report`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${agents.get(name)!.credential}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(200);
}

const volumes = Array.from({ length: 16 }, (_, i) => ({
  volume: `v-${i}`,
  epoch: i + 1,
  state: "SERVING",
}));

describe("a beat", () => {
  it("is one Table transaction, on the Table endpoint, and no API request", async () => {
    expect(new URL(agents.get("vm-1")!.url).origin).toBe(proxy.origin);
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

  it("costs one more per index partition the events touch, however many events", async () => {
    const plain = (await costOf(() => report({ volumes }))).table;
    const more = async (body: object) => (await costOf(() => report(body))).table - plain;
    const event = (i: number) => ({ type: "throttled", volume: "v-1", message: `pause ${i}` });
    // all, v|v-1, n|vm-1, t|throttled
    expect(await more({ volumes, events: [event(1)] })).toBe(4);
    const twenty = Array.from({ length: 20 }, (_, i) => event(i));
    expect(await more({ volumes, events: twenty })).toBe(4);
    // Two volumes and two types: all, v|v-1, v|v-2, n|vm-1, t|throttled, t|storage-failure
    const mixed = twenty.map((e, i) => ({
      ...e,
      volume: `v-${1 + (i % 2)}`,
      ...(i < 10 ? {} : { type: "storage-failure" }),
    }));
    expect(await more({ volumes, events: mixed })).toBe(6);
  });

  it("is 1 when refused, which writes nothing", async () => {
    const credential = agents.get("vm-1")!.credential;
    const cost = await costOf(async () => {
      const res = await api.request("/api/v1/nodes/vm-1/report", {
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
  const cp = () => controlPlane({ registry, now: clock, report: (err) => reported.push(err) });

  /** A sweep interval after the last pass, every node beats. */
  async function beatAll(): Promise<void> {
    nowMs += DEFAULT_SWEEP_POLICY.sweepIntervalMs;
    for (const name of agents.keys()) await beatAs(name);
  }

  /**
   * Node `name` joins and serves a volume of its own, as its agent does:
   * the attach rings its row, so it fetches its desired state again, and
   * reports the volume served with its replica ONLINE.
   */
  async function joinServing(name: string): Promise<void> {
    await join(name);
    const volume = `v-${name}`;
    const created = await api.request("/api/v1/volumes", {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ name: volume, sizeBytes: 64 * 1024 }),
    });
    expect(created.status).toBe(201);
    const attach = await api.request(`/api/v1/volumes/${volume}/attach`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ node: name }),
    });
    expect(attach.status).toBe(200);
    const agent = agents.get(name)!;
    const rung = await beat(agent.url, agent.etag, { at: clock().toISOString() });
    expect(rung).toEqual({ kind: "rung" });
    const res = await api.request(`/api/v1/nodes/${name}/desired`, {
      headers: { authorization: `Bearer ${agent.credential}` },
    });
    const desired = (await res.json()) as DesiredState;
    agent.etag = desired.liveness.etag;
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
    const removed = await api.request("/api/v1/nodes/vm-1", { method: "DELETE", headers: admin });
    expect(removed.status).toBe(204);
    agents.delete("vm-1");
    await joinServing("vm-h1");
    // The first pass only starts watching, and looks for event tables past their retention.
    await beatAll();
    const first = await sweep(cp(), DEFAULT_SWEEP_POLICY);
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
      while (agents.size < size) await joinServing(`vm-h${agents.size + 1}`);
      await beatAll();
      const cost = await costOf(async () => {
        expect(await sweep(cp(), DEFAULT_SWEEP_POLICY)).toEqual(NOTHING_SWEPT);
      });
      expect({ ...cost, reads: [...cost.reads].sort() }, `${size} nodes`).toEqual(expected);
    }
    expect(reported).toEqual([]);
  });
});
