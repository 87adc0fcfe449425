/**
 * The API's edge, for every endpoint: authentication before anything else,
 * bad input answered 4xx in the one error shape, and nothing written to
 * tables or blobs by a refused request. The agent's own endpoints (join,
 * report, desired) are called with a join token or the node's credential,
 * so what is refused there is the input, not the caller.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_ERROR_CODES, ERROR_STATUS } from "../../../contract/errors.ts";
import type { JoinResponse } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { DEFAULT_BODY_LIMIT_BYTES, REPORT_BODY_LIMIT_BYTES } from "../../../functions/app.ts";
import {
  type ControlPlaneFixture,
  errorOf,
  jsonOf,
  type StorageSnapshot,
  startControlPlane,
} from "../fixture.ts";

let cp: ControlPlaneFixture;
let before: StorageSnapshot;
/** A join token, and the credential of node `n1` (which owns `v1`). */
let joinToken: string;
let nodeCredential: string;

/** `{ "name": "x", "pad": "aaaa…" }` of exactly `bytes` bytes. */
function bodyOf(bytes: number): string {
  const frame = JSON.stringify({ name: "x", pad: "" });
  return JSON.stringify({ name: "x", pad: "a".repeat(bytes - frame.length) });
}

beforeAll(async () => {
  cp = await startControlPlane();
  await cp.addPool("p1");
  expect((await cp.call("POST", "/api/v1/volumes", { name: "v1", sizeBytes: 4096 })).status).toBe(
    201,
  );
  joinToken = (await jsonOf<IssuedToken>(await cp.call("POST", "/api/v1/tokens", {}), 201)).token;
  const joined = await jsonOf<JoinResponse>(
    await cp.call("POST", "/api/v1/nodes/join", { name: "n1" }, bearer(joinToken)),
    201,
  );
  nodeCredential = joined.credential;
  await jsonOf(await cp.call("POST", "/api/v1/volumes/v1/attach", { node: "n1" }), 200);
  before = await cp.snapshot();
});
afterAll(() => cp?.dispose());

function bearer(secret: string): Record<string, string> {
  return { authorization: `Bearer ${secret}` };
}

/** Who calls: the admin (by default), an agent joining, or node `n1`. */
type Caller = "admin" | "join" | "node";

function headersOf(caller: Caller): Record<string, string> {
  if (caller === "join") return bearer(joinToken);
  if (caller === "node") return bearer(nodeCredential);
  return {};
}

/** [method, path, body, status, code, caller] */
type Case = [string, string, unknown, number, string, Caller?];

const MALFORMED = '{"name": "v2", "sizeBytes": 512';
const TiB = 2 ** 40;

const badInput: Case[] = [
  // pools
  ["POST", "/api/v1/pools", MALFORMED, 400, "InvalidJson"],
  ["POST", "/api/v1/pools", "", 400, "InvalidJson"],
  ["POST", "/api/v1/pools", [], 400, "InvalidRequest"],
  [
    "POST",
    "/api/v1/pools",
    { name: 7, auth: { kind: "connectionString", connectionString: "x" } },
    400,
    "InvalidRequest",
  ],
  [
    "POST",
    "/api/v1/pools",
    { name: "p2", auth: { kind: "managedIdentity" } },
    400,
    "InvalidRequest",
  ],
  [
    "POST",
    "/api/v1/pools",
    { name: "p2", container: "A", auth: { kind: "connectionString", connectionString: "x" } },
    400,
    "InvalidRequest",
  ],
  [
    "POST",
    "/api/v1/pools",
    { name: "p2", auth: { kind: "connectionString", connectionString: "x" }, extra: 1 },
    400,
    "InvalidRequest",
  ],
  [
    "POST",
    "/api/v1/pools",
    { name: "p2", auth: { kind: "connectionString", connectionString: "nonsense" } },
    400,
    "InvalidRequest",
  ],
  [
    "POST",
    "/api/v1/pools",
    {
      name: "p1",
      container: "other",
      auth: { kind: "connectionString", connectionString: "UseDevelopmentStorage=true" },
    },
    409,
    "PoolExists",
  ],
  ["GET", "/api/v1/pools/P1", undefined, 400, "InvalidRequest"],
  ["GET", "/api/v1/pools/p9", undefined, 404, "PoolNotFound"],
  ["DELETE", "/api/v1/pools/p9", undefined, 404, "PoolNotFound"],
  ["DELETE", "/api/v1/pools/-p", undefined, 400, "InvalidRequest"],
  ["DELETE", "/api/v1/pools/p1", undefined, 409, "PoolInUse"],
  // volumes
  ["POST", "/api/v1/volumes", MALFORMED, 400, "InvalidJson"],
  ["POST", "/api/v1/volumes", "null", 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: "1GiB" }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 0 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: -512 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 511 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 4097 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 8 * TiB + 512 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 1e300 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 512, replicas: 0 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 512, replicas: "2" }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes", { name: "V 2", sizeBytes: 512 }, 400, "InvalidRequest"],
  [
    "POST",
    "/api/v1/volumes",
    { name: "v2", sizeBytes: 512, failover: "later" },
    400,
    "InvalidRequest",
  ],
  ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 512, pools: ["p9"] }, 404, "PoolNotFound"],
  [
    "POST",
    "/api/v1/volumes",
    { name: "v2", sizeBytes: 512, replicas: 2 },
    409,
    "InsufficientPools",
  ],
  ["POST", "/api/v1/volumes", { name: "v1", sizeBytes: 512 }, 409, "VolumeExists"],
  ["GET", "/api/v1/volumes/v9", undefined, 404, "VolumeNotFound"],
  ["GET", "/api/v1/volumes/v_1", undefined, 400, "InvalidRequest"],
  ["PATCH", "/api/v1/volumes/v1", MALFORMED, 400, "InvalidJson"],
  ["PATCH", "/api/v1/volumes/v1", {}, 400, "InvalidRequest"],
  ["PATCH", "/api/v1/volumes/v1", { sizeBytes: 8192 }, 400, "InvalidRequest"],
  ["PATCH", "/api/v1/volumes/v1", { failover: true }, 400, "InvalidRequest"],
  ["PATCH", "/api/v1/volumes/v1", { requiredNodes: "vm-1" }, 400, "InvalidRequest"],
  ["PATCH", "/api/v1/volumes/v9", { failover: "manual" }, 404, "VolumeNotFound"],
  ["DELETE", "/api/v1/volumes/v9", undefined, 404, "VolumeNotFound"],
  ["DELETE", "/api/v1/volumes/v1?force=yes", undefined, 400, "InvalidRequest"],
  ["DELETE", "/api/v1/volumes/v1?forse=true", undefined, 400, "InvalidRequest"],
  // attach and detach
  ["POST", "/api/v1/volumes/v1/attach", MALFORMED, 400, "InvalidJson"],
  ["POST", "/api/v1/volumes/v1/attach", { node: "vm-1", force: true }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes/v1/attach", { node: ["vm-1"] }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes/v1/attach", { node: "vm-1" }, 404, "NodeNotFound"],
  ["POST", "/api/v1/volumes/V1/attach", { node: "vm-1" }, 400, "InvalidRequest"],
  ["POST", "/api/v1/volumes/v9/detach", undefined, 404, "VolumeNotFound"],
  // events
  ["GET", "/api/v1/events?limit=0", undefined, 400, "InvalidRequest"],
  ["GET", "/api/v1/events?limit=many", undefined, 400, "InvalidRequest"],
  ["GET", "/api/v1/events?volume=V1", undefined, 400, "InvalidRequest"],
  ["GET", "/api/v1/events?continuation=bm90LWEtdG9rZW4", undefined, 400, "InvalidRequest"],
  ["GET", "/api/v1/events?colour=red", undefined, 400, "InvalidRequest"],
  // nodes, as an admin sees them
  ["GET", "/api/v1/nodes/n9", undefined, 404, "NodeNotFound"],
  ["GET", "/api/v1/nodes/N1", undefined, 400, "InvalidRequest"],
  ["POST", "/api/v1/nodes/n9/cordon", undefined, 404, "NodeNotFound"],
  ["POST", "/api/v1/nodes/n_1/cordon", undefined, 400, "InvalidRequest"],
  ["POST", "/api/v1/nodes/n9/uncordon", undefined, 404, "NodeNotFound"],
  ["POST", "/api/v1/nodes/-n/uncordon", undefined, 400, "InvalidRequest"],
  ["DELETE", "/api/v1/nodes/n9", undefined, 404, "NodeNotFound"],
  ["DELETE", "/api/v1/nodes/N 1", undefined, 400, "InvalidRequest"],
  ["DELETE", "/api/v1/nodes/n1", undefined, 409, "NodeInUse"],
  // join, with a join token
  ["POST", "/api/v1/nodes/join", MALFORMED, 400, "InvalidJson", "join"],
  ["POST", "/api/v1/nodes/join", "", 400, "InvalidJson", "join"],
  ["POST", "/api/v1/nodes/join", [], 400, "InvalidRequest", "join"],
  ["POST", "/api/v1/nodes/join", {}, 400, "InvalidRequest", "join"],
  ["POST", "/api/v1/nodes/join", { name: 7 }, 400, "InvalidRequest", "join"],
  ["POST", "/api/v1/nodes/join", { name: "N 2" }, 400, "InvalidRequest", "join"],
  ["POST", "/api/v1/nodes/join", { name: "n2", agentVersion: "" }, 400, "InvalidRequest", "join"],
  ["POST", "/api/v1/nodes/join", { name: "n2", facts: [] }, 400, "InvalidRequest", "join"],
  [
    "POST",
    "/api/v1/nodes/join",
    { name: "n2", facts: { "9lives": true } },
    400,
    "InvalidRequest",
    "join",
  ],
  [
    "POST",
    "/api/v1/nodes/join",
    { name: "n2", facts: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`f${i}`, i])) },
    400,
    "InvalidRequest",
    "join",
  ],
  ["POST", "/api/v1/nodes/join", { name: "n2", role: "writer" }, 400, "InvalidRequest", "join"],
  ["POST", "/api/v1/nodes/join", { name: "n1" }, 409, "NodeExists", "join"],
  // report, with the node's credential
  ["POST", "/api/v1/nodes/n1/report", MALFORMED, 400, "InvalidJson", "node"],
  ["POST", "/api/v1/nodes/n1/report", "null", 400, "InvalidRequest", "node"],
  ["POST", "/api/v1/nodes/n1/report", { agentVersion: 2 }, 400, "InvalidRequest", "node"],
  ["POST", "/api/v1/nodes/n1/report", { volumes: "v1" }, 400, "InvalidRequest", "node"],
  ["POST", "/api/v1/nodes/n1/report", { uptime: 1 }, 400, "InvalidRequest", "node"],
  [
    "POST",
    "/api/v1/nodes/n1/report",
    { volumes: [{ volume: "v1", epoch: -1, state: "SERVING" }] },
    400,
    "InvalidRequest",
    "node",
  ],
  [
    "POST",
    "/api/v1/nodes/n1/report",
    { volumes: [{ volume: "v1", epoch: 1, state: "HAPPY" }] },
    400,
    "InvalidRequest",
    "node",
  ],
  [
    "POST",
    "/api/v1/nodes/n1/report",
    {
      volumes: [
        { volume: "v1", epoch: 1, state: "SERVING" },
        { volume: "v1", epoch: 1, state: "SERVING" },
      ],
    },
    400,
    "InvalidRequest",
    "node",
  ],
  [
    "POST",
    "/api/v1/nodes/n1/report",
    { events: [{ type: "Disk On Fire", message: "x" }] },
    400,
    "InvalidRequest",
    "node",
  ],
  [
    "POST",
    "/api/v1/nodes/n1/report",
    { events: Array.from({ length: 21 }, () => ({ type: "storage-failure", message: "x" })) },
    400,
    "InvalidRequest",
    "node",
  ],
  ["POST", "/api/v1/nodes/n9/report", {}, 403, "Forbidden", "node"],
  // Whose name it is comes before whether it is a valid one: not its own either way.
  ["POST", "/api/v1/nodes/N1/report", {}, 403, "Forbidden", "node"],
  // desired state and its query, with the node's credential
  ["GET", "/api/v1/nodes/n1/desired?after=", undefined, 400, "InvalidRequest", "node"],
  ["GET", "/api/v1/nodes/n1/desired?after=-1", undefined, 400, "InvalidRequest", "node"],
  ["GET", "/api/v1/nodes/n1/desired?after=0x1", undefined, 400, "InvalidRequest", "node"],
  ["GET", "/api/v1/nodes/n1/desired?after=1.5", undefined, 400, "InvalidRequest", "node"],
  ["GET", "/api/v1/nodes/n1/desired?waitSeconds=26", undefined, 400, "InvalidRequest", "node"],
  ["GET", "/api/v1/nodes/n1/desired?waitSeconds=soon", undefined, 400, "InvalidRequest", "node"],
  ["GET", "/api/v1/nodes/n1/desired?colour=red", undefined, 400, "InvalidRequest", "node"],
  ["GET", "/api/v1/nodes/n9/desired", undefined, 403, "Forbidden", "node"],
  // join tokens
  ["POST", "/api/v1/tokens", MALFORMED, 400, "InvalidJson"],
  ["POST", "/api/v1/tokens", [], 400, "InvalidRequest"],
  ["POST", "/api/v1/tokens", { expiresInSeconds: "3600" }, 400, "InvalidRequest"],
  ["POST", "/api/v1/tokens", { expiresInSeconds: 59 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/tokens", { expiresInSeconds: 7 * 86_400 + 1 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/tokens", { expiresInSeconds: 90.5 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/tokens", { description: 7 }, 400, "InvalidRequest"],
  ["POST", "/api/v1/tokens", { description: "d".repeat(257) }, 400, "InvalidRequest"],
  ["POST", "/api/v1/tokens", { uses: 1 }, 400, "InvalidRequest"],
  ["DELETE", "/api/v1/tokens/not-a-token", undefined, 400, "InvalidRequest"],
  ["DELETE", "/api/v1/tokens/ABCDEF0123456789", undefined, 400, "InvalidRequest"],
  ["DELETE", `/api/v1/tokens/${"0".repeat(16)}`, undefined, 404, "TokenNotFound"],
  ["GET", "/api/v1/tokens/0000000000000000", undefined, 404, "NotFound"],
  // routes that do not exist
  ["GET", "/api/v1/nope", undefined, 404, "NotFound"],
  ["PUT", "/api/v1/volumes/v1", { failover: "manual" }, 404, "NotFound"],
  ["GET", "/api/v2/volumes", undefined, 404, "NotFound"],
];

describe("bad input", () => {
  it.each(badInput)("%s %s %j -> %d %s", async (method, path, body, status, code, caller) => {
    const err = await errorOf(
      await cp.call(method, path, body, headersOf(caller ?? "admin")),
      status,
    );
    expect(err.code).toBe(code);
    expect(err.message.length).toBeGreaterThan(0);
    expect(ERROR_STATUS[err.code as keyof typeof ERROR_STATUS]).toBe(status);
  });

  it("validation errors name the field and the rule", async () => {
    const err = await errorOf(
      await cp.call("POST", "/api/v1/volumes", { name: "v2", sizeBytes: 4097 }),
      400,
    );
    expect(err.message).toBe("body.sizeBytes: sizeBytes must be a multiple of 512");
    expect(err.details).toEqual({
      issues: [{ path: "body.sizeBytes", message: "sizeBytes must be a multiple of 512" }],
    });
  });

  it("answers 413 for a body over the limit, with or without Content-Length", async () => {
    const big = bodyOf(DEFAULT_BODY_LIMIT_BYTES + 1);
    for (const path of ["/api/v1/pools", "/api/v1/volumes"]) {
      expect((await errorOf(await cp.call("POST", path, big), 413)).code).toBe("PayloadTooLarge");
      const declared = await cp.call("POST", path, big, { "content-length": String(big.length) });
      expect((await errorOf(declared, 413)).code).toBe("PayloadTooLarge");
    }
    expect((await errorOf(await cp.call("PATCH", "/api/v1/volumes/v1", big), 413)).code).toBe(
      "PayloadTooLarge",
    );
    for (const [path, caller] of [
      ["/api/v1/tokens", "admin"],
      ["/api/v1/nodes/join", "join"],
    ] as const) {
      const res = await cp.call("POST", path, big, headersOf(caller));
      expect((await errorOf(res, 413)).code).toBe("PayloadTooLarge");
    }
    // Reports carry per-volume stats and may be larger, up to their own limit.
    const bigReport = bodyOf(REPORT_BODY_LIMIT_BYTES + 1);
    const report = await cp.call("POST", "/api/v1/nodes/n1/report", bigReport, headersOf("node"));
    expect((await errorOf(report, 413)).code).toBe("PayloadTooLarge");
    // Endpoints without a body refuse one declared too large before reading it.
    for (const [method, path] of [
      ["POST", "/api/v1/nodes/n1/cordon"],
      ["POST", "/api/v1/nodes/n1/uncordon"],
      ["DELETE", "/api/v1/nodes/n1"],
      ["DELETE", `/api/v1/tokens/${"0".repeat(16)}`],
    ] as const) {
      const res = await cp.call(method, path, big, { "content-length": String(big.length) });
      expect((await errorOf(res, 413)).code, `${method} ${path}`).toBe("PayloadTooLarge");
    }
    // Exactly at the limit the body is read, and refused only for what it says.
    const atLimit = await errorOf(
      await cp.call("POST", "/api/v1/volumes", bodyOf(DEFAULT_BODY_LIMIT_BYTES)),
      400,
    );
    expect(atLimit.code).toBe("InvalidRequest");
  });

  it("changed nothing in tables or blobs, and reported no internal error", async () => {
    expect(await cp.snapshot()).toEqual(before);
    expect(cp.reported).toEqual([]);
  });
});

describe("authentication", () => {
  /** Every admin endpoint, with an input that would otherwise succeed or change something. */
  const endpoints: Array<[string, string, unknown]> = [
    [
      "POST",
      "/api/v1/pools",
      {
        name: "p2",
        container: "c2",
        auth: { kind: "connectionString", connectionString: "UseDevelopmentStorage=true" },
      },
    ],
    ["GET", "/api/v1/pools", undefined],
    ["GET", "/api/v1/pools/p1", undefined],
    ["DELETE", "/api/v1/pools/p1", undefined],
    ["POST", "/api/v1/volumes", { name: "v2", sizeBytes: 512 }],
    ["GET", "/api/v1/volumes", undefined],
    ["GET", "/api/v1/volumes/v1", undefined],
    ["PATCH", "/api/v1/volumes/v1", { failover: "manual" }],
    ["DELETE", "/api/v1/volumes/v1?force=true", undefined],
    ["POST", "/api/v1/volumes/v1/attach", { node: "vm-1" }],
    ["POST", "/api/v1/volumes/v1/detach", undefined],
    ["GET", "/api/v1/events", undefined],
    ["GET", "/api/v1/nodes", undefined],
    ["GET", "/api/v1/nodes/n1", undefined],
    ["POST", "/api/v1/nodes/n1/cordon", undefined],
    ["POST", "/api/v1/nodes/n1/uncordon", undefined],
    ["DELETE", "/api/v1/nodes/n1", undefined],
    ["POST", "/api/v1/tokens", {}],
    ["GET", "/api/v1/tokens", undefined],
    ["DELETE", `/api/v1/tokens/${"0".repeat(16)}`, undefined],
  ];

  const credentials = (): Array<[string, Record<string, string>]> => {
    const [, id, secret] = /^pdk_([0-9a-f]{16})_(.*)$/.exec(cp.adminKey)!;
    const otherSecret = `${secret![0] === "A" ? "B" : "A"}${secret!.slice(1)}`;
    return [
      ["no key", {}],
      ["an empty bearer", { authorization: "Bearer " }],
      ["another scheme", { authorization: `Basic ${cp.adminKey}` }],
      ["a wrong secret", { authorization: `Bearer pdk_${id}_${otherSecret}` }],
      ["an unknown key id", { authorization: `Bearer pdk_${"f".repeat(16)}_${secret}` }],
      ["the key with junk after it", { authorization: `Bearer ${cp.adminKey} x` }],
    ];
  };

  it.each(endpoints)("%s %s -> 401 without a valid admin key", async (method, path, body) => {
    for (const [, headers] of credentials()) {
      const res = await cp.app.request(path, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const err = await errorOf(res, 401);
      expect(err.code).toBe("Unauthorized");
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer /);
    }
  });

  it("checks the key before the input, so bad input without a key is still 401", async () => {
    const res = await cp.app.request("/api/v1/volumes", { method: "POST", body: MALFORMED });
    expect((await errorOf(res, 401)).code).toBe("Unauthorized");
  });

  it("changed nothing in tables or blobs", async () => {
    expect(await cp.snapshot()).toEqual(before);
  });

  it("accepts the scheme case-insensitively", async () => {
    const res = await cp.app.request("/api/v1/pools", {
      headers: { authorization: `bearer ${cp.adminKey}` },
    });
    expect(res.status).toBe(200);
  });
});

describe("openapi.json", () => {
  it("is public and describes every operation the app serves", async () => {
    const doc = await jsonOf<{
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          { operationId: string; security?: unknown; responses: Record<string, unknown> }
        >
      >;
    }>(await cp.app.request("/api/v1/openapi.json"), 200);
    expect(doc.openapi).toBe("3.0.3");
    const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(
        ([method, op]) => `${method.toUpperCase()} ${path} ${op.operationId}`,
      ),
    );
    expect(operations.sort()).toEqual(
      [
        "DELETE /api/v1/nodes/{name} removeNode",
        "DELETE /api/v1/pools/{name} removePool",
        "DELETE /api/v1/tokens/{id} revokeToken",
        "GET /api/v1/nodes listNodes",
        "GET /api/v1/nodes/{name} getNode",
        "GET /api/v1/nodes/{name}/desired getDesiredState",
        "GET /api/agent/install.sh getAgentInstallScript",
        "GET /api/agent/pagedisk.mjs getAgentBundle",
        "GET /api/v1/tokens listTokens",
        "POST /api/v1/nodes/join joinNode",
        "POST /api/v1/nodes/{name}/cordon cordonNode",
        "POST /api/v1/nodes/{name}/heartbeat heartbeat",
        "POST /api/v1/nodes/{name}/report reportNode",
        "POST /api/v1/nodes/{name}/uncordon uncordonNode",
        "POST /api/v1/tokens createToken",
        "DELETE /api/v1/volumes/{name} deleteVolume",
        "GET /api/v1/events listEvents",
        "GET /api/v1/openapi.json getOpenApi",
        "GET /api/v1/pools listPools",
        "GET /api/v1/pools/{name} getPool",
        "GET /api/v1/volumes listVolumes",
        "GET /api/v1/volumes/{name} getVolume",
        "PATCH /api/v1/volumes/{name} updateVolume",
        "POST /api/v1/pools registerPool",
        "PATCH /api/v1/pools/{name}/annotations annotatePool",
        "POST /api/v1/pools/{name}/release releasePool",
        "GET /api/v1/reconciliation reconcile",
        "POST /api/v1/reconciliation/delete-orphans deleteOrphans",
        "POST /api/v1/volumes createVolume",
        "POST /api/v1/volumes/{name}/attach attachVolume",
        "POST /api/v1/volumes/{name}/detach detachVolume",
      ].sort(),
    );
    // Every documented guarded operation is routed: anonymous calls get 401, not 404.
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        if (!op.security) continue;
        const res = await cp.app.request(
          path.replace("{name}", "v1").replace("{id}", "0".repeat(16)),
          {
            method: method.toUpperCase(),
          },
        );
        expect(res.status, `${method} ${path}`).toBe(401);
        expect(op.responses["401"]).toBeDefined();
        expect(op.responses["403"]).toBeDefined();
      }
    }
  });

  it("carries the schemas' rules for clients", async () => {
    const doc = (await (await cp.app.request("/api/v1/openapi.json")).json()) as {
      paths: Record<string, Record<string, Record<string, unknown>>>;
      components: {
        schemas: {
          ErrorBody: { properties: { error: { properties: { code: { enum: string[] } } } } };
        };
      };
    };
    const create = doc.paths["/api/v1/volumes"]!.post as {
      requestBody: {
        content: {
          "application/json": {
            schema: { properties: Record<string, unknown>; required: string[] };
          };
        };
      };
      responses: Record<string, unknown>;
    };
    const schema = create.requestBody.content["application/json"].schema;
    expect(schema.properties.sizeBytes).toMatchObject({
      type: "integer",
      multipleOf: 512,
      maximum: 8 * TiB,
    });
    expect(schema.required.sort()).toEqual(["name", "sizeBytes"]);
    expect(Object.keys(create.responses).sort()).toEqual([
      "201",
      "400",
      "401",
      "403",
      "404",
      "409",
      "413",
      "429",
      "500",
      "502",
    ]);
    expect(doc.components.schemas.ErrorBody.properties.error.properties.code.enum).toEqual(
      API_ERROR_CODES,
    );
    const del = doc.paths["/api/v1/volumes/{name}"]!.delete as {
      parameters: Array<{ name: string; in: string; required: boolean }>;
    };
    expect(del.parameters.map((p) => [p.name, p.in, p.required])).toEqual([
      ["name", "path", true],
      ["force", "query", false],
    ]);
  });
});
