/**
 * How a change reaches a node's agent, through the API over Azurite: every
 * change it must act on (an attach, a detach, a failover, a change of a
 * served volume's replicas) bumps the node's desired-state generation and
 * rings its liveness row, so that the agent's next beat, conditional on
 * the ETag its last desired state gave, fails (412) and it fetches again;
 * a change to another node, a report, or an attach that changes nothing
 * rings nothing. The desired state answers at once, also to the
 * `after`/`waitSeconds` query of agents before 0.2, and its liveness ETag
 * is read before the volumes, so a change made while it is being built
 * makes the next beat fail. Reports carry stats, device names and facts,
 * and the worst case still fits the node's row.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { Node, VolumeReport } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { MAX_REPLICA_SLOTS, type Volume } from "../../../contract/volume.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { type SweepReport, sweep } from "../../../functions/health/sweep.ts";
import { nodes } from "../../../functions/registry/nodes.ts";
import type { FaultProxy } from "../../harness/fault-proxy.ts";
import {
  type ControlPlaneFixture,
  errorOf,
  jsonOf,
  startProxiedControlPlane,
} from "../fixture.ts";
import { agentNodes, aheadOfRealTime, STEPPED_POLICY } from "../agents.ts";

const POLICY = STEPPED_POLICY;
let fx: ControlPlaneFixture;
let proxy: FaultProxy;
/** The app's and the sweeper's clock. */
let nowMs = aheadOfRealTime();
const clock = () => new Date(nowMs);
let token: IssuedToken;

const agents = agentNodes(
  () => fx,
  () => token.token,
  clock,
);
const { desired, nextBeat } = agents;
/** Every node joined, in order. */
const joined = new Set<string>();

/** Join `name` and fetch its desired state, as its agent does at start. */
async function join(name: string, facts?: Record<string, unknown>): Promise<Node> {
  const { node } = await agents.join(name, facts);
  joined.add(name);
  await desired(name);
  return node;
}

/** A request of `node`'s agent, with its credential. */
function as(node: string, method: string, path: string, init: RequestInit = {}) {
  return fx.app.request(path, {
    method,
    ...init,
    headers: {
      authorization: `Bearer ${agents.credential(node)}`,
      "content-type": "application/json",
    },
  });
}

/** One report of `node`; the node as an admin then sees it (a report's answer is its generation only). */
async function report(node: string, body: Parameters<typeof agents.report>[1]): Promise<Node> {
  const answer = await agents.report(node, body);
  const seen = await jsonOf<Node>(await fx.call("GET", `/api/v1/nodes/${node}`), 200);
  expect(answer).toEqual({ desiredGeneration: seen.desiredGeneration });
  return seen;
}

async function createVolume(name: string, spec: Record<string, unknown> = {}): Promise<void> {
  const res = await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: 64 * 1024, ...spec });
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
  ({ fx, proxy } = await startProxiedControlPlane({ now: clock }));
  await fx.addPool("p1");
  await fx.addPool("p2", "p2-disks");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
});
afterAll(() => fx?.dispose());

describe("a change the node must act on rings its liveness row", () => {
  beforeAll(async () => {
    for (const name of ["g-1", "g-2"]) await join(name);
    await createVolume("gv-1");
  });

  it("lands beats while nothing changes; the generation starts at 0", async () => {
    expect((await desired("g-1")).generation).toBe(0);
    expect(await nextBeat("g-1")).toBe("landed");
    expect(await nextBeat("g-1")).toBe("landed");
  });

  it("attach: bumps the generation and rings the node's row, not another node's", async () => {
    await desired("g-1");
    await desired("g-2");
    const attachment = await attach("gv-1", "g-1");
    expect(await nextBeat("g-1")).toBe("rung");
    expect(await nextBeat("g-2")).toBe("landed");
    const after = await desired("g-1");
    expect(after.generation).toBe(1);
    expect(after.attachments).toMatchObject([
      { volume: "gv-1", epoch: attachment.epoch, leaseId: attachment.leaseId },
    ]);
    // The fetch that follows gives an ETag the next beat lands on.
    expect(await nextBeat("g-1")).toBe("landed");
    expect((await desired("g-2")).generation).toBe(0);
  });

  it("an attach that changes nothing, and a report, ring nothing and keep the generation", async () => {
    await attach("gv-1", "g-1");
    expect(await nextBeat("g-1")).toBe("landed");
    const reported = await report("g-1", { volumes: [{ volume: "gv-1", epoch: 1, state: "SERVING" }] });
    expect(reported.desiredGeneration).toBe(1);
    expect(await nextBeat("g-1")).toBe("landed");
    expect((await nodes(fx.registry).get("g-1"))!.value.desiredGeneration).toBe(1);
    expect((await desired("g-1")).generation).toBe(1);
  });

  it("detach: bumps the generation and rings the node's row, not another node's", async () => {
    await desired("g-2");
    await detach("gv-1");
    expect(await nextBeat("g-1")).toBe("rung");
    expect(await nextBeat("g-2")).toBe("landed");
    const after = await desired("g-1");
    expect(after.generation).toBe(2);
    expect(after.attachments).toEqual([]);
    expect(await nextBeat("g-1")).toBe("landed");
    expect(fx.reported).toEqual([]);
  });
});

describe("changes made by the sweeper ring the rows of the nodes they concern", () => {
  const reported: unknown[] = [];

  /** Every agent but `silent` beats; each beat lands. */
  async function beatAll(...silent: string[]): Promise<void> {
    for (const name of joined) {
      if (!silent.includes(name)) expect(await nextBeat(name), name).toBe("landed");
    }
  }

  function pass(): Promise<SweepReport> {
    const cp = controlPlane({ registry: fx.registry, now: clock, report: (e) => reported.push(e) });
    return sweep(cp, POLICY, { wait: async (ms) => void (nowMs += ms) });
  }

  beforeAll(async () => {
    for (const name of ["src", "dst", "r-w"]) await join(name);
    await beatAll();
    // The first pass only starts watching: silence counts from it.
    expect((await pass()).path).toBe("first pass: silence counts from now");
  });

  it("failover: rings the lost owner's row and the new owner's, and no other", async () => {
    await createVolume("fv", { requiredNodes: ["src", "dst"] });
    const attached = await attach("fv", "src");
    for (const name of ["src", "dst", "g-1"]) await desired(name);
    // src goes silent past lostAfter; everyone else beats.
    nowMs += 50_000;
    await beatAll("src");
    const swept = await pass();
    expect(swept).toMatchObject({ lost: ["src"], fenced: ["fv"], failedOver: ["fv"] });

    expect(await nextBeat("src")).toBe("rung");
    expect(await nextBeat("dst")).toBe("rung");
    expect(await nextBeat("g-1")).toBe("landed");
    const moved = await desired("dst");
    expect(moved.attachments).toMatchObject([{ volume: "fv", epoch: attached.epoch + 2 }]);
    expect((await desired("src")).attachments).toEqual([]);
    expect(reported).toEqual([]);
  });

  it("replica change: rings the owner's row when repair takes a replica its writer reported OFFLINE", async () => {
    await createVolume("rv", { replicas: 2 });
    await attach("rv", "r-w");
    const served = await desired("r-w");
    const [rv] = served.attachments;
    const [first, second] = rv!.replicas;
    await report("r-w", {
      volumes: [
        {
          volume: "rv",
          epoch: rv!.epoch,
          state: "DEGRADED",
          replicas: [
            { id: first!.id, state: "ONLINE" },
            { id: second!.id, state: "OFFLINE", error: "pool unreachable" },
          ],
        },
      ],
    });
    // The report itself rings nothing: the agent already knows.
    expect(await nextBeat("r-w")).toBe("landed");
    await beatAll();
    await pass();
    const volume = await jsonOf<Volume>(await fx.call("GET", "/api/v1/volumes/rv"), 200);
    expect(volume.status.replicas.find((r) => r.id === second!.id)).toMatchObject({
      state: "OFFLINE",
      message: "pool unreachable",
    });

    expect(await nextBeat("r-w")).toBe("rung");
    expect(await nextBeat("dst")).toBe("landed");
    const after = await desired("r-w");
    expect(after.generation).toBeGreaterThan(served.generation);
    const told = after.attachments[0]!.replicas.find((r) => r.id === second!.id);
    expect(told?.state).toBe("OFFLINE");
    expect(reported).toEqual([]);
  });
});

describe("GET /nodes/{name}/desired", () => {
  beforeAll(async () => {
    await join("w-1");
    await join("w-2");
    await createVolume("wv-1");
  });

  // Held as before 0.2, the request would wait the full 25 s for a change that never comes:
  // the bound is what lets this test fail then.
  it("answers at once to the query of agents before 0.2, which it ignores", { timeout: 20_000 }, async () => {
    const { generation } = await desired("w-1");
    for (const query of [`?after=${generation}&waitSeconds=25`, `?after=${generation + 7}&waitSeconds=25`]) {
      const now = await desired("w-1", query);
      expect(now.generation, query).toBe(generation);
      expect(now.attachments, query).toEqual([]);
    }
  });

  it("reads the liveness ETag before the volumes: a change made while it is built makes the next beat fail", async () => {
    await desired("w-1");
    // Hold the desired state's query of w-1's volumes (the owner index's partition, or the scan
    // of a registry whose index is not complete yet), once; its ETag has been read by then.
    let held = false;
    proxy.inject({
      fault: { type: "hang" },
      times: 1,
      match: (req) => {
        const filter = req.url.searchParams.get("$filter") ?? "";
        const ours =
          filter.includes("ownerNode eq 'w-1'") ||
          (req.url.pathname.endsWith("/owners()") && filter.includes("PartitionKey eq 'w-1'"));
        if (ours) held = true;
        return ours;
      },
    });
    const building = desired("w-1");
    await proxy.waitFor(() => held);
    await attach("wv-1", "w-1");
    proxy.clear();
    const built = await building;
    expect(await nextBeat("w-1")).toBe("rung");
    const fetched = await desired("w-1");
    expect(fetched.generation).toBe(built.generation + 1);
    expect(fetched.attachments.map((a) => a.volume)).toEqual(["wv-1"]);
    expect(await nextBeat("w-1")).toBe("landed");
  });

  it("is refused for another node's desired state (403), however it is asked", async () => {
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

describe("reports", () => {
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

  it("record stats and device per volume, and replace the facts when given", async () => {
    expect((await join("r-1", { os: "debian-12", cores: 2 })).facts).toEqual({
      os: "debian-12",
      cores: 2,
    });
    const volume = { volume: "v-r", epoch: 3, state: "SERVING" as const, stats, device: "/dev/nbd3" };
    const node = await report("r-1", { volumes: [volume], facts: { os: "debian-13" } });
    expect(node.volumes).toEqual([{ ...volume, replicas: [] }]);
    expect(node.facts).toEqual({ os: "debian-13" });
    // Without facts the recorded ones stay.
    expect((await report("r-1", { volumes: [] })).facts).toEqual({ os: "debian-13" });
    expect((await nodes(fx.registry).get("r-1"))!.value.facts).toEqual({ os: "debian-13" });
  });

  it("refuse malformed stats, devices and facts with 400 and change nothing", async () => {
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
        await as("r-1", "POST", "/api/v1/nodes/r-1/report", { body: JSON.stringify(body) }),
        400,
      );
      expect(err.code, JSON.stringify(body).slice(0, 80)).toBe("InvalidRequest");
    }
    expect(await fx.snapshot()).toEqual(before);
  });

  it("fit the worst case in the node row: 64 volumes with stats, six replicas and 256-character devices", async () => {
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
    const node = await report("r-max", { volumes });
    expect(node.volumes).toEqual(volumes);
    expect((await nodes(fx.registry).get("r-max"))!.value.volumes).toEqual(volumes);
    // Shrinking again leaves no stale reports behind.
    const one = volumes.slice(0, 1);
    await report("r-max", { volumes: one });
    expect((await nodes(fx.registry).get("r-max"))!.value.volumes).toEqual(one);
    expect(fx.reported).toEqual([]);
  });
});
