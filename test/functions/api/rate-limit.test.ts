/**
 * Rate limits on calls that change something, per credential: a node that
 * floods its reports gets 429 with `Retry-After` and the error body, while
 * another node and the admin key are still served; the refused calls
 * change nothing and read nothing (the registry's Table requests go
 * through a counting proxy); reads are not limited; the buckets held are
 * bounded however many callers come; and the agent's client waits as the
 * 429 tells it and then gets through.
 */
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { serve } from "@hono/node-server";
import type { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NodeClient } from "../../../agent/control/node-client.ts";
import type { JoinResponse } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { API_PREFIX, createApp } from "../../../functions/app.ts";
import {
  CallerLimits,
  DEFAULT_RATE_LIMITS,
  type RateLimits,
  TokenBuckets,
} from "../../../functions/http/rate-limit.ts";
import { settingsFrom } from "../../../functions/settings.ts";
import type { FaultProxy } from "../../harness/fault-proxy.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startProxiedControlPlane } from "../fixture.ts";

const LIMITS: RateLimits = {
  node: { perSecond: 1, burst: 4 },
  key: { perSecond: 1, burst: 3 },
  maxCallers: 100,
};

let fx: ControlPlaneFixture;
let proxy: FaultProxy;
/** The rate limits' clock; it moves only when a test moves it. */
let clockMs = 0;
/** The app under test, limited; `fx.app` (unlimited) sets the scene. */
let app: Hono;
let token: IssuedToken;
let n1: string;
let n2: string;

const call = (credential: string, method: string, path: string, body?: unknown) =>
  app.request(`${API_PREFIX}${path}`, {
    method,
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
const report = (credential: string, node: string) =>
  call(credential, "POST", `/nodes/${node}/report`, { agentVersion: "0.2.0" });

/** A 429 in the API's shape, with a Retry-After of `seconds`. */
async function expectTooMany(res: Response, seconds: number): Promise<void> {
  expect(res.headers.get("retry-after")).toBe(String(seconds));
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  const error = await errorOf(res, 429);
  expect(error.code).toBe("TooManyRequests");
  expect(error.details).toEqual({ retryAfterSeconds: seconds });
}

beforeAll(async () => {
  ({ fx, proxy } = await startProxiedControlPlane({}));
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  const join = async (name: string) =>
    (
      await jsonOf<JoinResponse>(
        await fx.call("POST", "/api/v1/nodes/join", { name }, { authorization: `Bearer ${token.token}` }),
        201,
      )
    ).credential;
  n1 = await join("n1");
  n2 = await join("n2");
  app = createApp({ ...fx.cp, rateLimits: LIMITS, rateLimitClock: () => clockMs });
});
afterAll(() => fx?.dispose());

describe("a node flooding its reports", () => {
  it("is served its burst, then refused 429 with Retry-After, changing and reading nothing", async () => {
    for (let i = 0; i < LIMITS.node.burst; i++) await jsonOf(await report(n1, "n1"), 200);
    const before = await fx.snapshot();
    proxy.resetCounts();
    for (let i = 0; i < 5; i++) await expectTooMany(await report(n1, "n1"), 1);
    // Another node's endpoint, with its own credential: refused the same, before the 403.
    await expectTooMany(await report(n1, "n2"), 1);
    expect(proxy.received()).toBe(0);
    expect(await fx.snapshot()).toEqual(before);
    expect(fx.reported).toEqual([]);
  });

  it("still reads: its desired state is not a change", async () => {
    await jsonOf(await call(n1, "GET", "/nodes/n1/desired"), 200);
  });

  it("leaves another node and the admin key served", async () => {
    await jsonOf(await report(n2, "n2"), 200);
    await jsonOf(await call(fx.adminKey, "POST", "/nodes/n2/cordon"), 200);
    await jsonOf(await call(fx.adminKey, "POST", "/nodes/n2/uncordon"), 200);
  });

  it("does not lend its bucket to its name: a wrong secret for n1 is 401, not 429", async () => {
    const secret = n1.slice(-43);
    const wrong = `pdn_n1_${secret[0] === "A" ? "B" : "A"}${secret.slice(1)}`;
    expect((await errorOf(await report(wrong, "n1"), 401)).code).toBe("Unauthorized");
  });

  it("is served again as its bucket refills, one call a second", async () => {
    clockMs += 1000;
    await jsonOf(await report(n1, "n1"), 200);
    await expectTooMany(await report(n1, "n1"), 1);
  });
});

describe("a leaked key", () => {
  it("an admin key flooding changes is refused 429, and nodes are still served", async () => {
    clockMs += 60_000;
    const created: string[] = [];
    for (let i = 0; i < LIMITS.key.burst; i++) {
      created.push((await jsonOf<IssuedToken>(await call(fx.adminKey, "POST", "/tokens", {}), 201)).id);
    }
    const before = await fx.snapshot();
    proxy.resetCounts();
    await expectTooMany(await call(fx.adminKey, "POST", "/tokens", {}), 1);
    await expectTooMany(await call(fx.adminKey, "DELETE", `/tokens/${created[0]}`), 1);
    expect(proxy.received()).toBe(0);
    expect(await fx.snapshot()).toEqual(before);
    // Reads are not limited, and the nodes have buckets of their own.
    await jsonOf(await call(fx.adminKey, "GET", "/tokens"), 200);
    await jsonOf(await report(n1, "n1"), 200);
    await jsonOf(await report(n2, "n2"), 200);
  });

  it("a join token flooding joins is refused 429, and no node is made by a refused join", async () => {
    clockMs += 60_000;
    const join = (name: string) => call(token.token, "POST", "/nodes/join", { name });
    for (let i = 0; i < LIMITS.key.burst; i++) await jsonOf(await join(`flood-${i}`), 201);
    const before = await fx.snapshot();
    await expectTooMany(await join("flood-refused"), 1);
    expect(await fx.snapshot()).toEqual(before);
    await errorOf(await fx.call("GET", "/api/v1/nodes/flood-refused"), 404);
  });
});

describe("the buckets held", () => {
  it("are bounded however many callers come, the least recently used dropped first", () => {
    let now = 0;
    const buckets = new TokenBuckets({ perSecond: 1, burst: 2 }, 1_000, () => now);
    let most = 0;
    let admitted = 0;
    for (let i = 0; i < 100_000; i++) {
      buckets.take(`caller-${i}`);
      most = Math.max(most, buckets.size);
      // One caller keeps calling through the flood of others: it is never pushed out, so it
      // never comes back with a fresh burst. The clock stands still: its burst is all it gets.
      if (i % 500 === 0 && buckets.take("steady") === 0) admitted++;
    }
    expect(most).toBe(1_000);
    expect(admitted).toBe(2);
    expect(buckets.waitFor("steady")).toBe(1000);
    // A dropped caller comes back with a full bucket, as an idle one would have refilled to.
    expect(buckets.waitFor("caller-0")).toBe(0);
    now += 1000;
    expect(buckets.waitFor("steady")).toBe(0);
  });

  it("hold only verified credentials: a check before verifying adds nothing", () => {
    const limits = new CallerLimits(DEFAULT_RATE_LIMITS, () => 0);
    for (let i = 0; i < 10_000; i++) expect(limits.waitFor(`pdn_n${i}_forged`)).toBe(0);
    expect(limits.nodes.size + limits.keys.size).toBe(0);
  });

  it("treat a clock stepped back as no time passed, not as a debt", () => {
    let now = 10_000;
    const buckets = new TokenBuckets({ perSecond: 1, burst: 1 }, 10, () => now);
    expect(buckets.take("a")).toBe(0);
    now = 0;
    expect(buckets.take("a")).toBe(1000);
    now = 1000;
    expect(buckets.take("a")).toBe(0);
  });
});

describe("the settings", () => {
  const base = { PAGEDISK_REGISTRY_CONNECTION_STRING: "UseDevelopmentStorage=true" };

  it("default to limits no honest caller reaches, and take overrides", () => {
    expect(settingsFrom(base).rateLimits).toEqual(DEFAULT_RATE_LIMITS);
    const set = settingsFrom({
      ...base,
      PAGEDISK_RATE_LIMIT_NODE_PER_SECOND: "0.5",
      PAGEDISK_RATE_LIMIT_NODE_BURST: "10",
      PAGEDISK_RATE_LIMIT_KEY_PER_SECOND: "50",
      PAGEDISK_RATE_LIMIT_KEY_BURST: "500",
    });
    expect(set.rateLimits.node).toEqual({ perSecond: 0.5, burst: 10 });
    expect(set.rateLimits.key).toEqual({ perSecond: 50, burst: 500 });
  });

  it.each([
    ["PAGEDISK_RATE_LIMIT_NODE_PER_SECOND", "0"],
    ["PAGEDISK_RATE_LIMIT_KEY_PER_SECOND", "fast"],
    ["PAGEDISK_RATE_LIMIT_NODE_BURST", "0"],
    ["PAGEDISK_RATE_LIMIT_KEY_BURST", "2.5"],
  ])("refuse %s=%s, naming it", (name, value) => {
    expect(() => settingsFrom({ ...base, [name]: value })).toThrow(name);
  });
});

describe("the agent's client", () => {
  it("waits out a 429's Retry-After and sends the report again, which gets through", async () => {
    const limited = createApp({ ...fx.cp, rateLimits: { ...LIMITS, node: { perSecond: 1, burst: 1 } } });
    const seen: number[] = [];
    const server = serve({
      fetch: async (request) => {
        const res = await limited.fetch(request);
        if (new URL(request.url).pathname.endsWith("/n2/report")) seen.push(res.status);
        return res;
      },
      hostname: "127.0.0.1",
      port: 0,
    }) as Server;
    await new Promise<void>((ready) => server.once("listening", ready));
    try {
      const { port } = server.address() as AddressInfo;
      const client = new NodeClient({
        apiUrl: `http://127.0.0.1:${port}${API_PREFIX}`,
        node: "n2",
        credential: n2,
      });
      await client.report({ agentVersion: "0.2.0" });
      const answer = await client.report({ agentVersion: "0.2.0" });
      expect(answer.desiredGeneration).toEqual(expect.any(Number));
      expect(seen).toEqual([200, 429, 200]);
    } finally {
      await new Promise<void>((done) => server.close(() => done()));
    }
  });
});
