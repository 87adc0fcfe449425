/**
 * The Azure Functions entry through `@azure/functions` itself (test mode):
 * the registered HTTP handler, given the library's own `HttpRequest` and
 * `InvocationContext`, answers as the Hono app does, with status, headers
 * and body carried across the adapter; and the timer handler, eight times
 * a minute, runs a sweep and logs what it did: a first pass only starts
 * watching (a node silent for an hour stays READY), and a pass that knows
 * the path works (a previous pass recorded, a witness beating) makes the
 * silent node LOST.
 */
import {
  HttpRequest,
  type HttpResponseInit,
  InvocationContext,
  type Timer,
} from "@azure/functions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { beat } from "../../agent/control/liveness-beat.ts";
import { DEFAULT_BODY_LIMIT_BYTES } from "../../functions/app.ts";
import { issueAdminKey } from "../../functions/registry/admin-keys.ts";
import { createLivenessRow, livenessRowUrl, newLivenessKey } from "../../functions/registry/liveness.ts";
import { nodes } from "../../functions/registry/nodes.ts";
import { newSealingKeyText } from "../../functions/registry/sealing-keys.ts";
import { readSweeperState, writeSweeperState } from "../../functions/registry/sweeper-state.ts";
import { openRegistry, type Registry } from "../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { NOTHING_SWEPT } from "./agents.ts";
import { nodeRecord } from "./node-record.ts";

type Entry = typeof import("../../functions/index.ts");

const ORIGIN = "https://pagedisk-test.azurewebsites.net";
let azurite: Azurite;
let entry: Entry;
let adminKey: string;

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  // index.ts reads its settings on first invocation; set them before it runs.
  process.env.PAGEDISK_REGISTRY_CONNECTION_STRING = azurite.connectionString;
  process.env.PAGEDISK_TABLE_PREFIX = "fn";
  // Pools are registered here with Azurite's key, which the host refuses unless allowed.
  process.env.PAGEDISK_POOL_ACCOUNT_KEYS = "allow";
  process.env.PAGEDISK_SECRETS_KEY = newSealingKeyText();
  // Intervals far longer than a test can stall, so that a beat just before a pass is fresh in it.
  process.env.PAGEDISK_HEARTBEAT_INTERVAL_SECONDS = "20";
  process.env.PAGEDISK_SUSPECT_AFTER_SECONDS = "60";
  process.env.PAGEDISK_LOST_AFTER_SECONDS = "120";
  entry = await import("../../functions/index.ts");
  ({ key: adminKey } = await issueAdminKey(
    await openRegistry(azurite.connectionString, { prefix: "fn" }),
    new Date(),
  ));
});
afterAll(() => azurite?.dispose());

function context(): InvocationContext {
  return new InvocationContext({ invocationId: "test", functionName: "api" });
}

async function invoke(
  method: string,
  path: string,
  options: { body?: string; headers?: Record<string, string> } = {},
): Promise<HttpResponseInit> {
  const request = new HttpRequest({
    method,
    url: `${ORIGIN}${path}`,
    headers: { authorization: `Bearer ${adminKey}`, ...options.headers },
    ...(options.body === undefined ? {} : { body: { string: options.body } }),
  });
  return entry.httpTrigger(request, context());
}

/** The response body as text, however the handler gave it. */
async function textOf(res: HttpResponseInit): Promise<string> {
  return new Response(res.body as ConstructorParameters<typeof Response>[0]).text();
}

function headersOf(res: HttpResponseInit): Headers {
  return new Headers(res.headers as ConstructorParameters<typeof Headers>[0]);
}

describe("HTTP trigger", () => {
  it("answers a GET with the app's status, headers and JSON body", async () => {
    const res = await invoke("GET", "/api/v1/openapi.json", { headers: {} });
    expect(res.status).toBe(200);
    expect(headersOf(res).get("content-type")).toMatch(/^application\/json/);
    const doc = JSON.parse(await textOf(res)) as { openapi: string; paths: object };
    expect(doc.openapi).toBe("3.0.3");
    expect(Object.keys(doc.paths)).toContain("/api/v1/volumes");
  });

  it("passes a JSON POST body through and returns the created record", async () => {
    const res = await invoke("POST", "/api/v1/pools", {
      body: JSON.stringify({
        name: "fn-pool",
        auth: { kind: "connectionString", connectionString: azurite.connectionString },
      }),
      headers: { "content-type": "application/json" },
    });
    const text = await textOf(res);
    expect(res.status, text).toBe(201);
    const pool = JSON.parse(text) as { name: string; auth: { connectionString: string } };
    expect(pool.name).toBe("fn-pool");
    expect(pool.auth.connectionString).toContain("AccountKey=***");

    const list = await invoke("GET", "/api/v1/pools");
    expect(list.status).toBe(200);
    expect(await textOf(list)).toContain('"fn-pool"');
  });

  it("answers an unknown route 404 in the one error shape", async () => {
    const res = await invoke("GET", "/api/v1/no-such-thing");
    expect(res.status).toBe(404);
    expect(JSON.parse(await textOf(res))).toEqual({
      error: { code: "NotFound", message: "no route for GET /api/v1/no-such-thing" },
    });
  });

  it("answers a missing or wrong key 401 with its WWW-Authenticate header", async () => {
    for (const authorization of ["", "Bearer pdk_0000000000000000_nope"]) {
      const res = await invoke("GET", "/api/v1/pools", { headers: { authorization } });
      expect(res.status).toBe(401);
      expect(headersOf(res).get("www-authenticate")).toBe('Bearer realm="pagedisk"');
      expect(JSON.parse(await textOf(res)).error.code).toBe("Unauthorized");
    }
  });

  it("keeps the body limit: an oversized POST is 413 and registers nothing", async () => {
    const padding = "x".repeat(DEFAULT_BODY_LIMIT_BYTES + 1);
    const res = await invoke("POST", "/api/v1/pools", {
      body: JSON.stringify({ name: "too-big", pad: padding }),
      headers: { "content-type": "application/json" },
    });
    expect(res.status).toBe(413);
    expect(JSON.parse(await textOf(res)).error.code).toBe("PayloadTooLarge");
    expect((await invoke("GET", "/api/v1/pools/too-big")).status).toBe(404);
  });

  it("serves the agent downloads below /api/agent, outside /api/v1, with no credential", async () => {
    const bundle = await invoke("GET", "/api/agent/pagedisk.mjs", { headers: {} });
    expect(bundle.status).toBe(200);
    expect(headersOf(bundle).get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(await textOf(bundle)).toMatch(/^#!\/usr\/bin\/env node\n/);
    const head = await invoke("HEAD", "/api/agent/pagedisk.mjs", { headers: {} });
    expect(head.status).toBe(200);
    expect(headersOf(head).get("etag")).toBe(headersOf(bundle).get("etag"));
  });

  it("answers 204 with no body", async () => {
    const res = await invoke("DELETE", "/api/v1/pools/fn-pool");
    expect(res.status).toBe(204);
    expect(await textOf(res)).toBe("");
  });
});

describe("timer trigger", () => {
  let registry: Registry;
  /** The witness's row and the ETag its next beat is conditional on. */
  const witness = { url: "", etag: "" };

  beforeAll(async () => {
    registry = await openRegistry(azurite.connectionString, { prefix: "fn" });
    const anHourAgo = new Date(Date.now() - 3600_000).toISOString();
    await nodes(registry).insert(nodeRecord("vm-silent", { joinedAt: anHourAgo, lastReportAt: anHourAgo }));
    // A node whose agent beats to its liveness row, as agents do: evidence that the path works.
    const key = newLivenessKey();
    await nodes(registry).insert(nodeRecord("vm-witness", { joinedAt: anHourAgo, livenessKey: key }));
    Object.assign(witness, {
      url: livenessRowUrl(registry.liveness, key),
      etag: await createLivenessRow(registry.liveness, key),
    });
  });

  async function witnessBeats(): Promise<void> {
    const outcome = await beat(witness.url, witness.etag, { at: new Date().toISOString() });
    if (outcome.kind !== "landed") throw new Error(`the witness's beat: ${JSON.stringify(outcome)}`);
    witness.etag = outcome.etag;
  }

  /** One run of the timer handler; what it logged. */
  async function fire(): Promise<unknown[][]> {
    const logged: unknown[][] = [];
    const ctx = new InvocationContext({
      functionName: "sweep",
      logHandler: (_level, ...args) => logged.push(args),
    });
    const timer: Timer = {
      isPastDue: false,
      schedule: { adjustForDST: false },
      scheduleStatus: { last: "", next: "", lastUpdated: "" },
    };
    await entry.sweepTrigger(timer, ctx);
    return logged;
  }

  it("fires eight times a minute", () => {
    expect(entry.SWEEP_SCHEDULE).toBe("0,8,15,23,30,38,45,53 * * * * *");
  });

  it("sweeps: a first pass judges nobody by silence, and logs that it only starts watching", async () => {
    await witnessBeats();
    expect(await fire()).toEqual([[{ ...NOTHING_SWEPT, path: "first pass: silence counts from now" }]]);
    expect((await nodes(registry).get("vm-silent"))?.value.state).toBe("READY");
    expect((await readSweeperState(registry))?.value.lastPassAt).not.toBeNull();
  });

  it("sweeps: with the path known to work for an hour, a node silent for that hour becomes LOST, and the pass is logged", async () => {
    const saved = (await readSweeperState(registry))!;
    const now = Date.now();
    await writeSweeperState(
      registry,
      {
        ...saved.value,
        lastPassAt: new Date(now - 7_500).toISOString(),
        pathSince: new Date(now - 3600_000).toISOString(),
      },
      saved.etag,
    );
    await witnessBeats();
    expect(await fire()).toEqual([[{ ...NOTHING_SWEPT, suspect: ["vm-silent"], lost: ["vm-silent"] }]]);
    expect((await nodes(registry).get("vm-silent"))?.value.state).toBe("LOST");
    expect((await nodes(registry).get("vm-witness"))?.value.state).toBe("READY");
  });
});
