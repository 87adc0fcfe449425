/**
 * Nodes and their credentials over Azurite: join tokens (shown once,
 * stored hashed, expiring, revocable), joining, reports (and the
 * deprecated heartbeat route of agents before 0.2), the node's view of its
 * liveness (no heartbeat until the agent's first beat to its liveness row,
 * then that beat's time; the last report's time; never the row's key),
 * desired state with SAS URLs the storage service itself holds to one
 * blob, and the admin node endpoints.
 */
import { AnonymousCredential, PageBlobClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { beat } from "../../../agent/control/liveness-beat.ts";
import type { Attachment } from "../../../contract/attachment.ts";
import type { DesiredState, JoinResponse, Node } from "../../../contract/node.ts";
import type { IssuedToken, JoinTokenList } from "../../../contract/token.ts";
import { POLICY_PROPAGATION_MS } from "../../../functions/arbiter/desired-state.ts";
import { DEFAULT_EVENT_RETENTION_DAYS, listEvents } from "../../../functions/registry/events.ts";
import { listRows } from "../../../functions/registry/rows.ts";
import { nodes } from "../../../functions/registry/nodes.ts";
import { restStatus } from "../../../functions/rest-error.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";
import { aheadOfRealTime } from "../agents.ts";

let cp: ControlPlaneFixture;
/**
 * The app's clock: still unless a test moves it. It starts a minute ahead of
 * the real time: near it, because the storage service checks the SAS it
 * signs against its own clock; ahead, so that what beats claim counts
 * (registry/liveness.ts `lastBeatOf`).
 */
let nowMs = aheadOfRealTime();

beforeAll(async () => {
  cp = await startControlPlane({ now: () => new Date(nowMs) });
  await cp.addPool("p1");
});
afterAll(() => cp?.dispose());

/** A request with `credential` as the bearer (none when undefined). */
function as(credential: string | undefined, method: string, path: string, body?: unknown) {
  return cp.app.request(path, {
    method,
    headers: {
      "content-type": "application/json",
      ...(credential === undefined ? {} : { authorization: `Bearer ${credential}` }),
    },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
}

async function newToken(expiresInSeconds = 3600): Promise<IssuedToken> {
  return jsonOf<IssuedToken>(
    await cp.call("POST", "/api/v1/tokens", { expiresInSeconds, description: "test" }),
    201,
  );
}

async function join(token: string, name: string, facts: Record<string, unknown> = {}) {
  return as(token, "POST", "/api/v1/nodes/join", { name, agentVersion: "0.1.0", facts });
}

async function joined(token: string, name: string): Promise<JoinResponse> {
  return jsonOf<JoinResponse>(await join(token, name), 201);
}

/** Every stored property of every row of every table (events included), as one string. */
async function everythingStored(): Promise<string> {
  const all: unknown[] = [];
  for await (const t of cp.registry.service.listTables())
    all.push(await listRows(cp.registry.table(t.name!)));
  return JSON.stringify(all);
}

/** Events of a node as the API lists them, at the test's clock. */
const eventsOf = (node: string, limit: number) =>
  listEvents(
    cp.registry,
    { node },
    { limit },
    { now: new Date(nowMs), retentionDays: DEFAULT_EVENT_RETENTION_DAYS },
  );

describe("join tokens", () => {
  it("are shown once, listed without secret, and stored only as a hash", async () => {
    const issued = await newToken();
    expect(issued.token).toMatch(/^pdj_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(issued.token.startsWith(`pdj_${issued.id}_`)).toBe(true);
    expect(issued.expiresAt).toBe(new Date(nowMs + 3600_000).toISOString());
    const list = await jsonOf<JoinTokenList>(await cp.call("GET", "/api/v1/tokens"), 200);
    const listed = list.items.find((t) => t.id === issued.id);
    expect(listed).toEqual({
      id: issued.id,
      description: "test",
      createdAt: new Date(nowMs).toISOString(),
      expiresAt: issued.expiresAt,
    });
    expect(JSON.stringify(list)).not.toContain(issued.token.slice(21));
    expect(await everythingStored()).not.toContain(issued.token.slice(21));
  });

  it("revoked, no longer join; revoking again is 404", async () => {
    const { id, token } = await newToken();
    expect((await cp.call("DELETE", `/api/v1/tokens/${id}`)).status).toBe(204);
    expect((await errorOf(await cp.call("DELETE", `/api/v1/tokens/${id}`), 404)).code).toBe(
      "TokenNotFound",
    );
    expect((await errorOf(await join(token, "vm-revoked"), 401)).code).toBe("Unauthorized");
    expect((await cp.call("GET", "/api/v1/nodes/vm-revoked")).status).toBe(404);
  });

  it("past expiry, no longer join", async () => {
    const { token } = await newToken(60);
    nowMs += 60_000;
    try {
      expect((await errorOf(await join(token, "vm-late"), 401)).code).toBe("Unauthorized");
    } finally {
      nowMs -= 60_000;
    }
    expect((await cp.call("GET", "/api/v1/nodes/vm-late")).status).toBe(404);
  });
});

describe("joining", () => {
  it("registers the node READY and gives a credential that is stored only hashed", async () => {
    const { token } = await newToken();
    const res = await joined(token, "vm-a.example");
    expect(res.credential).toMatch(/^pdn_vm-a\.example_[A-Za-z0-9_-]{43}$/);
    expect(res.node).toMatchObject({
      name: "vm-a.example",
      state: "READY",
      cordoned: false,
      agentVersion: "0.1.0",
      volumes: [],
    });
    expect(JSON.stringify(res.node)).not.toContain("credential");
    const secret = res.credential.slice(-43);
    expect(await everythingStored()).not.toContain(secret);
    const shown = await jsonOf<Node>(await cp.call("GET", "/api/v1/nodes/vm-a.example"), 200);
    expect(shown).toEqual(res.node);
    const events = await eventsOf("vm-a.example", 10);
    expect(events.items.map((e) => e.type)).toEqual(["node-joined"]);
  });

  it("refuses a name already registered, and allows it again after remove", async () => {
    const { token } = await newToken();
    const first = await joined(token, "vm-b");
    expect((await errorOf(await join(token, "vm-b"), 409)).code).toBe("NodeExists");
    // The first credential still works: the refused join changed nothing.
    expect((await as(first.credential, "GET", "/api/v1/nodes/vm-b/desired")).status).toBe(200);

    expect((await cp.call("DELETE", "/api/v1/nodes/vm-b")).status).toBe(204);
    expect(
      (await errorOf(await as(first.credential, "GET", "/api/v1/nodes/vm-b/desired"), 401)).code,
    ).toBe("Unauthorized");
    const second = await joined(token, "vm-b");
    expect(second.credential).not.toBe(first.credential);
    expect((await as(second.credential, "GET", "/api/v1/nodes/vm-b/desired")).status).toBe(200);
    expect((await as(first.credential, "GET", "/api/v1/nodes/vm-b/desired")).status).toBe(401);
  });
});

describe("reports and heartbeats", () => {
  let credential: string;
  let joinedNode: Node;
  beforeAll(async () => {
    ({ credential, node: joinedNode } = await joined((await newToken()).token, "vm-hb"));
  });

  const show = async () => jsonOf<Node>(await cp.call("GET", "/api/v1/nodes/vm-hb"), 200);
  const listed = async () =>
    (await jsonOf<{ items: Node[] }>(await cp.call("GET", "/api/v1/nodes"), 200)).items.find(
      (n) => n.name === "vm-hb",
    );

  it("shows no heartbeat and no report before the agent's first", async () => {
    expect(joinedNode).toMatchObject({ lastHeartbeatAt: null, lastReportAt: null });
    expect(await show()).toMatchObject({ lastHeartbeatAt: null, lastReportAt: null });
    expect(await listed()).toMatchObject({ lastHeartbeatAt: null, lastReportAt: null });
  });

  it("records a report: agent version, volume reports and the report's time, not a heartbeat", async () => {
    nowMs += 5_000;
    const res = await as(credential, "POST", "/api/v1/nodes/vm-hb/report", {
      agentVersion: "0.2.0",
      volumes: [{ volume: "v-x", epoch: 4, state: "DEGRADED", replicas: [{ id: "0123456789ab", state: "OFFLINE", error: "pool p1 unreachable" }] }],
    });
    // The answer is the node's generation only, so that a report reads nothing more.
    expect(await jsonOf(res, 200)).toEqual({ desiredGeneration: 0 });
    const node = await show();
    expect(node).toMatchObject({
      state: "READY",
      agentVersion: "0.2.0",
      lastReportAt: new Date(nowMs).toISOString(),
      lastHeartbeatAt: null,
      volumes: [{ volume: "v-x", epoch: 4, state: "DEGRADED", replicas: [{ id: "0123456789ab", state: "OFFLINE", error: "pool p1 unreachable" }] }],
    });
  });

  it("records the events of a report about a volume the node writes, as the node's word, at the report's time", async () => {
    // Events are heard only from a volume's writer (event-forgery.test.ts has the refusals).
    const { credential: writer } = await joined((await newToken()).token, "vm-ev");
    await jsonOf(await cp.call("POST", "/api/v1/volumes", { name: "v-ev", sizeBytes: 1024 * 1024 }), 201);
    const attached = await jsonOf<Attachment>(
      await cp.call("POST", "/api/v1/volumes/v-ev/attach", { node: "vm-ev" }),
      200,
    );
    const replica = (await jsonOf<{ status: { replicas: Array<{ id: string }> } }>(
      await cp.call("GET", "/api/v1/volumes/v-ev"),
      200,
    )).status.replicas[0]!.id;
    nowMs += 5_000;
    const res = await as(writer, "POST", "/api/v1/nodes/vm-ev/report", {
      events: [
        {
          type: "storage-failure",
          volume: "v-ev",
          pool: "p1",
          message: "replica offline",
          data: { epoch: attached.epoch, replica },
        },
      ],
    });
    expect(res.status).toBe(200);
    const events = await eventsOf("vm-ev", 10);
    expect(events.items.map((e) => e.type).sort()).toEqual(["node-joined", "storage-failure", "volume-attached"]);
    const failure = events.items.find((e) => e.type === "storage-failure")!;
    expect(failure).toMatchObject({ node: "vm-ev", volume: "v-ev", pool: "p1", source: "node" });
    expect(failure.at).toBe(new Date(nowMs).toISOString());
    expect(events.items.find((e) => e.type === "volume-attached")).toMatchObject({ source: "control-plane" });
  });

  it("shows the agent's beat to its liveness row as its last heartbeat, and keeps the last report's time", async () => {
    const reportedAt = (await show()).lastReportAt;
    const { liveness } = await jsonOf<DesiredState>(
      await as(credential, "GET", "/api/v1/nodes/vm-hb/desired"),
      200,
    );
    nowMs += 5_000;
    const beatAt = new Date(nowMs).toISOString();
    expect((await beat(liveness.url, liveness.etag, { at: beatAt })).kind).toBe("landed");
    expect(await show()).toMatchObject({ lastHeartbeatAt: beatAt, lastReportAt: reportedAt });
    expect(await listed()).toMatchObject({ lastHeartbeatAt: beatAt, lastReportAt: reportedAt });
  });

  it("records a heartbeat of an agent before 0.2 as a report and a beat", async () => {
    nowMs += 5_000;
    const at = new Date(nowMs).toISOString();
    const res = await as(credential, "POST", "/api/v1/nodes/vm-hb/heartbeat", {
      agentVersion: "0.1.9",
      volumes: [],
    });
    const node = await jsonOf<Node>(res, 200);
    expect(node).toMatchObject({ agentVersion: "0.1.9", volumes: [], lastReportAt: at, lastHeartbeatAt: at });
    expect(await show()).toEqual(node);
  });

  it("never shows the node's liveness key, which only its own desired state holds, in its row's URL", async () => {
    const key = (await nodes(cp.registry).get("vm-hb"))!.value.livenessKey!;
    expect(key).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const answers = [
      JSON.stringify(joinedNode),
      await (await cp.call("GET", "/api/v1/nodes/vm-hb")).text(),
      await (await cp.call("GET", "/api/v1/nodes")).text(),
      await (await as(credential, "POST", "/api/v1/nodes/vm-hb/heartbeat", {})).text(),
      await (await cp.call("POST", "/api/v1/nodes/vm-hb/cordon")).text(),
      await (await cp.call("POST", "/api/v1/nodes/vm-hb/uncordon")).text(),
    ];
    for (const answer of answers) {
      expect(answer).toContain('"vm-hb"');
      expect(answer).not.toContain(key);
      expect(answer).not.toMatch(/livenessKey/);
    }
    expect(await (await as(credential, "POST", "/api/v1/nodes/vm-hb/report", {})).text()).toBe(
      '{"desiredGeneration":0}',
    );
    const desired = await jsonOf<DesiredState>(
      await as(credential, "GET", "/api/v1/nodes/vm-hb/desired"),
      200,
    );
    expect(JSON.stringify({ ...desired, liveness: { ...desired.liveness, url: "" } })).not.toContain(key);
    expect(decodeURIComponent(new URL(desired.liveness.url).pathname)).toContain(`(PartitionKey='${key}'`);
  });

  it("refuses bad reports with 400 and changes nothing, on either route", async () => {
    const before = await cp.snapshot();
    const bad: unknown[] = [
      '{"volumes": [',
      { volumes: [{ volume: "Bad Name", epoch: 1, state: "SERVING" }] },
      { volumes: [{ volume: "v", epoch: -1, state: "SERVING" }] },
      { volumes: [{ volume: "v", epoch: 1, state: "HAPPY" }] },
      {
        volumes: [
          { volume: "v", epoch: 1, state: "SERVING" },
          { volume: "v", epoch: 1, state: "SERVING" },
        ],
      },
      { events: [{ type: "Not Kebab", message: "x" }] },
      { events: Array.from({ length: 21 }, () => ({ type: "x", message: "x" })) },
      { nodeName: "vm-other" },
    ];
    for (const route of ["report", "heartbeat"]) {
      for (const body of bad) {
        const err = await errorOf(
          await as(credential, "POST", `/api/v1/nodes/vm-hb/${route}`, body),
          400,
        );
        expect(["InvalidJson", "InvalidRequest"]).toContain(err.code);
      }
    }
    expect(await cp.snapshot()).toEqual(before);
  });
});

describe("desired state", () => {
  let credential: string;
  let attachment: Attachment;
  let desired: DesiredState;

  beforeAll(async () => {
    ({ credential } = await joined((await newToken()).token, "vm-d"));
    const create = await cp.call("POST", "/api/v1/volumes", { name: "vd", sizeBytes: 1024 * 1024 });
    expect(create.status).toBe(201);
    attachment = await jsonOf<Attachment>(
      await cp.call("POST", "/api/v1/volumes/vd/attach", { node: "vm-d" }),
      200,
    );
    // Past the time Azure may take to apply the new policy: the SAS is bound to it from then on
    // (before, a short unbound one: test/functions/security/hostile-node.test.ts).
    nowMs += POLICY_PROPAGATION_MS;
    desired = await jsonOf<DesiredState>(
      await as(credential, "GET", "/api/v1/nodes/vm-d/desired"),
      200,
    );
  });

  it("lists the node's attachments with the lease id and a SAS bound to its policy, expiring within 15 minutes", () => {
    expect(desired.node).toBe("vm-d");
    expect(desired.attachments).toHaveLength(1);
    const [a] = desired.attachments;
    expect(a).toMatchObject({
      volume: "vd",
      sizeBytes: 1024 * 1024,
      epoch: attachment.epoch,
      leaseId: attachment.leaseId,
    });
    expect(a!.replicas).toHaveLength(1);
    const url = new URL(a!.replicas[0]!.url!);
    // The permissions are the policy's, named after the lease: replacing it revokes this SAS.
    expect(url.searchParams.get("si")).toBe(attachment.leaseId);
    expect(url.searchParams.has("sp")).toBe(false);
    expect(url.searchParams.get("sr")).toBe("b");
    const expiry = Date.parse(url.searchParams.get("se")!);
    expect(expiry).toBeGreaterThan(nowMs);
    expect(expiry).toBeLessThanOrEqual(nowMs + 15 * 60_000);
    expect(Date.parse(a!.sasExpiresAt)).toBe(expiry);
  });

  it("never carries an account key", () => {
    const text = JSON.stringify(desired);
    expect(text).not.toContain(cp.azurite.accountKey);
    expect(text).not.toMatch(/AccountKey/i);
  });

  it("gives a SAS the storage service honours for writes with the lease, and for nothing else", async () => {
    const url = desired.attachments[0]!.replicas[0]!.url!;
    const blob = new PageBlobClient(url, new AnonymousCredential());
    const page = Buffer.alloc(512, 7);
    await blob.uploadPages(page, 0, 512, { conditions: { leaseId: attachment.leaseId } });
    const read = await blob.download(0, 512);
    expect(read.contentLength).toBe(512);
    // The lease is the control plane's: a write without its id is refused by the service.
    const unleased = await blob.uploadPages(page, 0, 512).catch((e) => e);
    expect(restStatus(unleased)).toBe(412);
    // No delete permission.
    const deleted = await blob
      .delete({ conditions: { leaseId: attachment.leaseId } })
      .catch((e) => e);
    expect(restStatus(deleted)).toBe(403);
    // The signature covers this blob only: the same query on another blob is refused.
    const other = new URL(url);
    other.pathname = other.pathname.replace(/\/vd\/[0-9a-f]{12}$/, "/vd/000000000000");
    const elsewhere = await new PageBlobClient(other.toString(), new AnonymousCredential())
      .getProperties()
      .catch((e) => e);
    expect(restStatus(elsewhere)).toBe(403);
  });

  it("lists nothing for a node that owns nothing, and nothing after detach", async () => {
    const { credential: other } = await joined((await newToken()).token, "vm-e");
    const empty = await jsonOf<DesiredState>(
      await as(other, "GET", "/api/v1/nodes/vm-e/desired"),
      200,
    );
    expect(empty.attachments).toEqual([]);
    expect((await cp.call("POST", "/api/v1/volumes/vd/detach")).status).toBe(200);
    const after = await jsonOf<DesiredState>(
      await as(credential, "GET", "/api/v1/nodes/vm-d/desired"),
      200,
    );
    expect(after.attachments).toEqual([]);
  });
});

describe("admin node endpoints", () => {
  beforeAll(async () => {
    await joined((await newToken()).token, "vm-admin");
  });

  it("lists and shows nodes without their credential hashes", async () => {
    const list = await cp.call("GET", "/api/v1/nodes");
    const text = await list.text();
    expect(list.status).toBe(200);
    expect((JSON.parse(text) as { items: Node[] }).items.map((n) => n.name)).toContain("vm-admin");
    expect(text).not.toMatch(/sha256|credential/i);
    expect((await errorOf(await cp.call("GET", "/api/v1/nodes/vm-none"), 404)).code).toBe(
      "NodeNotFound",
    );
  });

  it("cordons and uncordons; a cordoned node takes no new volume", async () => {
    const cordoned = await jsonOf<Node>(
      await cp.call("POST", "/api/v1/nodes/vm-admin/cordon"),
      200,
    );
    expect(cordoned.cordoned).toBe(true);
    // Again: nothing changes.
    expect(
      (await jsonOf<Node>(await cp.call("POST", "/api/v1/nodes/vm-admin/cordon"), 200)).cordoned,
    ).toBe(true);
    expect((await cp.call("POST", "/api/v1/volumes", { name: "vc", sizeBytes: 4096 })).status).toBe(
      201,
    );
    expect(
      (await errorOf(await cp.call("POST", "/api/v1/volumes/vc/attach", { node: "vm-admin" }), 409))
        .code,
    ).toBe("NodeNotEligible");
    const uncordoned = await jsonOf<Node>(
      await cp.call("POST", "/api/v1/nodes/vm-admin/uncordon"),
      200,
    );
    expect(uncordoned.cordoned).toBe(false);
    expect((await cp.call("POST", "/api/v1/volumes/vc/attach", { node: "vm-admin" })).status).toBe(
      200,
    );
    const types = (await eventsOf("vm-admin", 20)).items.map(
      (e) => e.type,
    );
    expect(types.filter((t) => t === "node-cordoned")).toHaveLength(1);
    expect(types).toContain("node-uncordoned");
  });

  it("refuses to remove a node that owns a volume, and removes it once detached", async () => {
    const err = await errorOf(await cp.call("DELETE", "/api/v1/nodes/vm-admin"), 409);
    expect(err).toMatchObject({ code: "NodeInUse", details: { volumes: ["vc"] } });
    expect((await cp.call("GET", "/api/v1/nodes/vm-admin")).status).toBe(200);
    expect((await cp.call("POST", "/api/v1/volumes/vc/detach")).status).toBe(200);
    expect((await cp.call("DELETE", "/api/v1/nodes/vm-admin")).status).toBe(204);
    expect((await cp.call("GET", "/api/v1/nodes/vm-admin")).status).toBe(404);
    expect((await errorOf(await cp.call("DELETE", "/api/v1/nodes/vm-admin"), 404)).code).toBe(
      "NodeNotFound",
    );
  });

  it("refuses bad input with 4xx", async () => {
    const before = await cp.snapshot();
    const cases: Array<[string, string, unknown, number]> = [
      ["POST", "/api/v1/tokens", '{"expiresInSeconds": ', 400],
      ["POST", "/api/v1/tokens", { expiresInSeconds: 59 }, 400],
      ["POST", "/api/v1/tokens", { expiresInSeconds: 8 * 86_400 }, 400],
      ["POST", "/api/v1/tokens", { expiresInSeconds: "3600" }, 400],
      ["POST", "/api/v1/tokens", { extra: true }, 400],
      ["DELETE", "/api/v1/tokens/not-an-id", undefined, 400],
      ["DELETE", `/api/v1/tokens/${"0".repeat(16)}`, undefined, 404],
      ["GET", "/api/v1/nodes/Not_A_Name", undefined, 400],
      ["POST", "/api/v1/nodes/vm-none/cordon", undefined, 404],
      ["DELETE", "/api/v1/nodes/vm-none", undefined, 404],
    ];
    for (const [method, path, body, status] of cases) {
      await errorOf(await cp.call(method, path, body), status);
    }
    const { token } = await newToken();
    const afterToken = await cp.snapshot();
    for (const body of [
      '{"name": ',
      { name: "UPPER" },
      { name: "vm-x", facts: { "bad key": 1 } },
      {
        name: "vm-x",
        facts: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i])),
      },
      { name: "vm-x", facts: { nested: { a: 1 } } },
      { name: "vm-x", agentVersion: "" },
      { name: "vm-x", credential: "mine" },
    ]) {
      await errorOf(await as(token, "POST", "/api/v1/nodes/join", body), 400);
    }
    expect(await cp.snapshot()).toEqual(afterToken);
    expect(Object.keys(before.tables)).toEqual(Object.keys(afterToken.tables));
  });
});
