/**
 * What the agent daemon relies on, through the API over Azurite: the node's
 * desired-state generation moves with every attach and detach and survives
 * heartbeats; `GET .../desired?after=G&waitSeconds=S` answers at once when
 * the generation differs or S is 0, and otherwise holds until an attach
 * wakes it; bad query values are 400 and change nothing; heartbeats carry
 * stats, device names and facts, and the worst case still fits the row.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { DesiredState, JoinResponse, Node, VolumeReport } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { MAX_REPLICA_SLOTS } from "../../../contract/volume.ts";
import { desiredChanges } from "../../../functions/arbiter/desired-changes.ts";
import { nodes } from "../../../functions/registry/nodes.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

let fx: ControlPlaneFixture;
/** The app's clock; real time, since the storage service checks the SAS it signs. */
const nowMs = Date.now();
let token: IssuedToken;
const credentials = new Map<string, string>();

function as(node: string, method: string, path: string, init: RequestInit = {}) {
  return fx.app.request(path, {
    method,
    ...init,
    headers: {
      authorization: `Bearer ${credentials.get(node)}`,
      "content-type": "application/json",
    },
  });
}

async function join(name: string, facts: Record<string, unknown> = {}): Promise<Node> {
  const res = await fx.app.request("/api/v1/nodes/join", {
    method: "POST",
    headers: { authorization: `Bearer ${token.token}`, "content-type": "application/json" },
    body: JSON.stringify({ name, facts }),
  });
  const joined = await jsonOf<JoinResponse>(res, 201);
  credentials.set(name, joined.credential);
  return joined.node;
}

async function heartbeat(node: string, body: unknown): Promise<Node> {
  return jsonOf<Node>(
    await as(node, "POST", `/api/v1/nodes/${node}/heartbeat`, { body: JSON.stringify(body) }),
    200,
  );
}

async function desired(node: string, query = ""): Promise<DesiredState> {
  return jsonOf<DesiredState>(await as(node, "GET", `/api/v1/nodes/${node}/desired${query}`), 200);
}

async function createVolume(name: string): Promise<void> {
  const res = await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: 64 * 1024 });
  expect(res.status).toBe(201);
}

async function attach(volume: string, node: string): Promise<Attachment> {
  return jsonOf<Attachment>(
    await fx.call("POST", `/api/v1/volumes/${volume}/attach`, { node }),
    200,
  );
}

async function detach(volume: string): Promise<void> {
  expect((await fx.call("POST", `/api/v1/volumes/${volume}/detach`, {})).status).toBe(200);
}

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs) });
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
});
afterAll(() => fx?.dispose());

describe("the desired-state generation", () => {
  it("starts at 0, moves with attach and detach of the node's volumes only, and survives heartbeats", async () => {
    expect((await join("g-1")).desiredGeneration).toBe(0);
    await join("g-2");
    expect((await desired("g-1")).generation).toBe(0);

    await createVolume("gv-1");
    await attach("gv-1", "g-1");
    const attached = await desired("g-1");
    expect(attached.generation).toBe(1);
    expect(attached.attachments.map((a) => a.volume)).toEqual(["gv-1"]);
    // Attaching what is already attached to the node changes nothing.
    await attach("gv-1", "g-1");
    expect((await desired("g-1")).generation).toBe(1);
    // Another node's volumes are not this node's business.
    expect((await desired("g-2")).generation).toBe(0);

    // The heartbeat replaces the row and keeps the generation.
    expect((await heartbeat("g-1", { volumes: [] })).desiredGeneration).toBe(1);
    expect((await nodes(fx.registry).get("g-1"))!.value.desiredGeneration).toBe(1);

    await detach("gv-1");
    const detached = await desired("g-1");
    expect(detached.generation).toBe(2);
    expect(detached.attachments).toEqual([]);
    expect(fx.reported).toEqual([]);
  });
});

describe("GET /nodes/{name}/desired?after=&waitSeconds=", () => {
  beforeAll(async () => {
    await join("w-1");
    await join("w-2");
    await createVolume("wv-1");
  });

  it("answers at once with waitSeconds=0, with the same generation", async () => {
    const { generation } = await desired("w-1");
    const now = await desired("w-1", `?after=${generation}&waitSeconds=0`);
    expect(now.generation).toBe(generation);
    expect(now.attachments).toEqual([]);
    expect(desiredChanges(fx.registry).waiting("w-1")).toBe(0);
  });

  it("answers at once when the agent's generation is not the node's", async () => {
    const { generation } = await desired("w-1");
    const now = await desired("w-1", `?after=${generation + 7}&waitSeconds=25`);
    expect(now.generation).toBe(generation);
  });

  it("holds a request until a volume is attached to the node, then answers with it", async () => {
    const { generation } = await desired("w-1");
    const held = desired("w-1", `?after=${generation}&waitSeconds=25`);
    const attachment = await attach("wv-1", "w-1");
    const answer = await held;
    expect(answer.generation).toBe(generation + 1);
    expect(answer.attachments).toMatchObject([
      { volume: "wv-1", epoch: attachment.epoch, leaseId: attachment.leaseId },
    ]);
    expect(desiredChanges(fx.registry).waiting("w-1")).toBe(0);
  });

  it("holds a request until the node's volume is detached", async () => {
    const { generation, attachments } = await desired("w-1");
    expect(attachments.map((a) => a.volume)).toEqual(["wv-1"]);
    const held = desired("w-1", `?after=${generation}&waitSeconds=25`);
    await detach("wv-1");
    const answer = await held;
    expect(answer.generation).toBeGreaterThan(generation);
    expect(answer.attachments).toEqual([]);
  });

  it("lets go of a held request whose client goes away", async () => {
    const { generation } = await desired("w-1");
    const client = new AbortController();
    const held = as("w-1", "GET", `/api/v1/nodes/w-1/desired?after=${generation}&waitSeconds=25`, {
      signal: client.signal,
    });
    client.abort();
    // Answered (to nobody) without waiting out the 25 s, and nothing left subscribed.
    await held;
    expect(desiredChanges(fx.registry).waiting("w-1")).toBe(0);
  });

  it("is still refused for another node's desired state (403), however it is asked", async () => {
    for (const query of ["", "?after=0&waitSeconds=25"]) {
      const err = await errorOf(await as("w-2", "GET", `/api/v1/nodes/w-1/desired${query}`), 403);
      expect(err.code).toBe("Forbidden");
    }
  });

  it("refuses bad after and waitSeconds with 400 naming the parameter, and changes nothing", async () => {
    const before = await fx.snapshot();
    const bad: Array<[string, string]> = [
      ["?after=-1", "query.after"],
      ["?after=abc", "query.after"],
      ["?after=", "query.after"],
      ["?after=0x10", "query.after"],
      ["?after=1.5", "query.after"],
      ["?waitSeconds=26", "query.waitSeconds"],
      ["?waitSeconds=-1", "query.waitSeconds"],
      ["?waitSeconds=1.5", "query.waitSeconds"],
      ["?waitSeconds=soon", "query.waitSeconds"],
      ["?after=0&wait=5", "query"],
    ];
    for (const [query, path] of bad) {
      const err = await errorOf(await as("w-1", "GET", `/api/v1/nodes/w-1/desired${query}`), 400);
      expect(err.code, query).toBe("InvalidRequest");
      const issues = (err.details as { issues: Array<{ path: string }> }).issues;
      expect(issues[0]!.path.startsWith(path), `${query}: ${issues[0]!.path}`).toBe(true);
    }
    expect(await fx.snapshot()).toEqual(before);
  });
});

describe("heartbeat reports", () => {
  const stats = {
    readOps: 10,
    writeOps: 20,
    bytesRead: 40960,
    bytesWritten: 81920,
    errors: 0,
    throttlePauses: 1,
    queueDepth: 3,
    readLatencyMs: { p50: 0.8, p99: 4.5 },
    writeLatencyMs: { p50: 1.2, p99: 9 },
  };

  it("records stats and device per volume, and replaces the facts when given", async () => {
    expect((await join("r-1", { os: "debian-12", cores: 2 })).facts).toEqual({
      os: "debian-12",
      cores: 2,
    });
    const report = { volume: "v-r", epoch: 3, state: "SERVING", stats, device: "/dev/nbd3" };
    const node = await heartbeat("r-1", { volumes: [report], facts: { os: "debian-13" } });
    expect(node.volumes).toEqual([{ ...report, replicas: [] }]);
    expect(node.facts).toEqual({ os: "debian-13" });
    // Without facts the recorded ones stay.
    expect((await heartbeat("r-1", { volumes: [] })).facts).toEqual({ os: "debian-13" });
    expect((await nodes(fx.registry).get("r-1"))!.value.facts).toEqual({ os: "debian-13" });
  });

  it("refuses malformed stats, devices and facts with 400 and changes nothing", async () => {
    const before = await fx.snapshot();
    const volume = (extra: Record<string, unknown>) => ({
      volumes: [{ volume: "v-r", epoch: 3, state: "SERVING", ...extra }],
    });
    const bad: unknown[] = [
      volume({ stats: { ...stats, readOps: -1 } }),
      volume({ stats: { ...stats, queueDepth: "3" } }),
      volume({ stats: { ...stats, readLatencyMs: { p50: 1 } } }),
      volume({ stats: { ...stats, extra: 1 } }),
      volume({ stats: { readOps: 1 } }),
      volume({ device: "x".repeat(257) }),
      volume({ device: 3 }),
      { facts: { "not a name": 1 } },
      { facts: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`f${i}`, i])) },
      // 32 facts of 256 control characters would escape to 48 KiB of JSON.
      {
        facts: Object.fromEntries(
          Array.from({ length: 32 }, (_, i) => [`f${i}`, "\u0001".repeat(256)]),
        ),
      },
    ];
    for (const body of bad) {
      const err = await errorOf(
        await as("r-1", "POST", "/api/v1/nodes/r-1/heartbeat", { body: JSON.stringify(body) }),
        400,
      );
      expect(err.code, JSON.stringify(body).slice(0, 80)).toBe("InvalidRequest");
    }
    expect(await fx.snapshot()).toEqual(before);
  });

  it("fits the worst case in the node row: 64 volumes with stats, six replicas and 256-character devices", async () => {
    await join("r-max");
    const huge = Number.MAX_VALUE;
    const worstStats = {
      readOps: huge,
      writeOps: huge,
      bytesRead: huge,
      bytesWritten: huge,
      errors: huge,
      throttlePauses: huge,
      queueDepth: huge,
      readLatencyMs: { p50: huge, p99: huge },
      writeLatencyMs: { p50: huge, p99: huge },
    };
    const volumes: VolumeReport[] = Array.from({ length: 64 }, (_, i) => ({
      volume: `v${i}-`.padEnd(63, "x"),
      epoch: Number.MAX_SAFE_INTEGER,
      state: "DEGRADED",
      replicas: Array.from({ length: MAX_REPLICA_SLOTS }, (_, r) => ({
        id: `${r}`.repeat(12),
        state: "RESYNCING" as const,
        progress: 99.99999999999999,
        copiedBytes: huge,
        totalBytes: huge,
        dirtyBytes: huge,
        // Quotes take two characters each as JSON; control characters are refused.
        error: '"'.repeat(160),
      })),
      stats: worstStats,
      // Control characters take six characters each as JSON.
      device: `/dev/${"\u0001".repeat(251)}`,
    }));
    // Far over what one property holds (32 Ki characters), so the row must spread it.
    expect(JSON.stringify(volumes).length).toBeGreaterThan(4 * 32 * 1024);
    const node = await heartbeat("r-max", { volumes });
    expect(node.volumes).toEqual(volumes);
    expect((await nodes(fx.registry).get("r-max"))!.value.volumes).toEqual(volumes);
    // Shrinking again leaves no stale reports behind.
    const one = volumes.slice(0, 1);
    await heartbeat("r-max", { volumes: one });
    expect((await nodes(fx.registry).get("r-max"))!.value.volumes).toEqual(one);
    expect(fx.reported).toEqual([]);
  });
});
