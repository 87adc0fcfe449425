/**
 * The Azure Functions entry through `@azure/functions` itself (test mode):
 * the registered HTTP handler, given the library's own `HttpRequest` and
 * `InvocationContext`, answers as the Hono app does, with status, headers
 * and body carried across the adapter; and the timer handler runs a sweep.
 */
import {
  HttpRequest,
  type HttpResponseInit,
  InvocationContext,
  type Timer,
} from "@azure/functions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_BODY_LIMIT_BYTES } from "../../functions/app.ts";
import { issueAdminKey } from "../../functions/registry/admin-keys.ts";
import { nodes } from "../../functions/registry/nodes.ts";
import { openRegistry } from "../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
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
  it("fires every 2 s, as often as agents heartbeat", () => {
    expect(entry.SWEEP_SCHEDULE).toBe("*/2 * * * * *");
  });

  it("sweeps: a node silent for an hour becomes LOST, and the pass is logged", async () => {
    const registry = await openRegistry(azurite.connectionString, { prefix: "fn" });
    const anHourAgo = new Date(Date.now() - 3600_000).toISOString();
    await nodes(registry).insert(nodeRecord("vm-silent", { joinedAt: anHourAgo, lastHeartbeatAt: anHourAgo }));
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
    expect((await nodes(registry).get("vm-silent"))?.value.state).toBe("LOST");
    expect(logged).toEqual([[expect.objectContaining({ lost: ["vm-silent"] })]]);
  });
});
