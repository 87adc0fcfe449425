/**
 * The auth matrix of the node endpoints: which credential may call what.
 * No credential, a wrong or unknown one, or an expired or revoked token is
 * 401; a valid credential of the wrong kind, or another node's, is 403,
 * on the agent's report and desired state and on the deprecated heartbeat
 * route alike; and no refused call changes anything in the tables (the
 * liveness table included) or blobs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JoinResponse } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import {
  type ControlPlaneFixture,
  errorOf,
  jsonOf,
  type StorageSnapshot,
  startControlPlane,
} from "../fixture.ts";

let cp: ControlPlaneFixture;
let nowMs = Date.now();
let nodeA: string;
let nodeB: string;
let token: IssuedToken;
let expired: IssuedToken;
let revoked: IssuedToken;
let before: StorageSnapshot;

const request = (credential: string | undefined, method: string, path: string, body?: unknown) =>
  cp.app.request(path, {
    method,
    headers: {
      "content-type": "application/json",
      ...(credential === undefined ? {} : { authorization: `Bearer ${credential}` }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

beforeAll(async () => {
  cp = await startControlPlane({ now: () => new Date(nowMs) });
  const issue = async (expiresInSeconds: number) =>
    jsonOf<IssuedToken>(await cp.call("POST", "/api/v1/tokens", { expiresInSeconds }), 201);
  token = await issue(3600);
  expired = await issue(60);
  revoked = await issue(3600);
  const join = async (name: string) =>
    (
      await jsonOf<JoinResponse>(
        await request(token.token, "POST", "/api/v1/nodes/join", { name }),
        201,
      )
    ).credential;
  nodeA = await join("vm-a");
  nodeB = await join("vm-b");
  expect((await cp.call("DELETE", `/api/v1/tokens/${revoked.id}`)).status).toBe(204);
  // From here the short token is past its expiry.
  nowMs += 61_000;
  before = await cp.snapshot();
});
afterAll(() => cp?.dispose());

/** Credentials that prove nothing: 401 everywhere. */
function unauthenticated(): Array<[string, string | undefined]> {
  const secretA = nodeA.slice(-43);
  const flipped = `${secretA[0] === "A" ? "B" : "A"}${secretA.slice(1)}`;
  return [
    ["no credential", undefined],
    ["garbage", "hello"],
    ["vm-a's name with a wrong secret", `pdn_vm-a_${flipped}`],
    ["a credential for a node that does not exist", `pdn_vm-z_${secretA}`],
    ["vm-a's credential for another name", `pdn_vm-b_${secretA}`],
    ["an expired join token", expired.token],
    ["a revoked join token", revoked.token],
    [
      "an admin key with a wrong secret",
      `${cp.adminKey.slice(0, -1)}${cp.adminKey.endsWith("A") ? "B" : "A"}`,
    ],
  ];
}

const nodeEndpoints: Array<[string, string, unknown]> = [
  ["POST", "/api/v1/nodes/vm-a/report", { volumes: [] }],
  ["POST", "/api/v1/nodes/vm-a/heartbeat", { volumes: [] }],
  ["GET", "/api/v1/nodes/vm-a/desired", undefined],
];

const adminEndpoints: Array<[string, string, unknown]> = [
  ["POST", "/api/v1/tokens", { expiresInSeconds: 600 }],
  ["GET", "/api/v1/tokens", undefined],
  ["DELETE", "/api/v1/tokens/0123456789abcdef", undefined],
  ["GET", "/api/v1/nodes", undefined],
  ["GET", "/api/v1/nodes/vm-a", undefined],
  ["POST", "/api/v1/nodes/vm-a/cordon", undefined],
  ["POST", "/api/v1/nodes/vm-a/uncordon", undefined],
  ["DELETE", "/api/v1/nodes/vm-a", undefined],
  ["GET", "/api/v1/volumes", undefined],
  ["POST", "/api/v1/volumes/v1/attach", { node: "vm-a" }],
  ["GET", "/api/v1/events", undefined],
];

const joinEndpoint: [string, string, unknown] = ["POST", "/api/v1/nodes/join", { name: "vm-c" }];

describe("401: credentials that prove nothing", () => {
  it.each([...nodeEndpoints, ...adminEndpoints, joinEndpoint])(
    "%s %s",
    async (method, path, body) => {
      for (const [what, credential] of unauthenticated()) {
        const res = await request(credential, method, path, body);
        expect(res.status, what).toBe(401);
        expect((await errorOf(res, 401)).code).toBe("Unauthorized");
      }
    },
  );
});

describe("403: valid credentials that may not", () => {
  it.each(nodeEndpoints)(
    "%s %s refuses another node, an admin and a join token",
    async (method, path, body) => {
      for (const credential of [nodeB, cp.adminKey, token.token]) {
        expect((await errorOf(await request(credential, method, path, body), 403)).code).toBe(
          "Forbidden",
        );
      }
    },
  );

  it.each(adminEndpoints)(
    "%s %s refuses a node credential and a join token",
    async (method, path, body) => {
      for (const credential of [nodeA, token.token]) {
        expect((await errorOf(await request(credential, method, path, body), 403)).code).toBe(
          "Forbidden",
        );
      }
    },
  );

  it("join refuses an admin key and a node credential", async () => {
    const [method, path, body] = joinEndpoint;
    for (const credential of [cp.adminKey, nodeA]) {
      expect((await errorOf(await request(credential, method, path, body), 403)).code).toBe(
        "Forbidden",
      );
    }
  });

  it("checks the credential before the input: bad input from another node is still 403", async () => {
    for (const route of ["report", "heartbeat"]) {
      const res = await request(nodeB, "POST", `/api/v1/nodes/vm-a/${route}`, { volumes: 7 });
      expect((await errorOf(res, 403)).code, route).toBe("Forbidden");
    }
  });
});

describe("after every refused call", () => {
  it("nothing changed in the tables or blobs", async () => {
    expect(await cp.snapshot()).toEqual(before);
    expect(cp.reported).toEqual([]);
  });

  it("the right credentials still work", async () => {
    expect((await request(nodeA, "GET", "/api/v1/nodes/vm-a/desired")).status).toBe(200);
    expect((await request(nodeB, "POST", "/api/v1/nodes/vm-b/report", {})).status).toBe(200);
    expect((await request(nodeB, "POST", "/api/v1/nodes/vm-b/heartbeat", {})).status).toBe(200);
    const [method, path, body] = joinEndpoint;
    expect((await request(token.token, method, path, body)).status).toBe(201);
  });
});
