/**
 * The status API's HTTP edge over bare sockets, on its unix socket: what
 * node:http refuses itself (headers over its limit, malformed HTTP) comes
 * as `{ "error": { "code", "message" } }`; and an answer given before the
 * request's body arrived (405 to a POST) either closes honestly or serves
 * the next request on the connection (it does the latter: the app never
 * touches a body, so node discards it).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { statusApp } from "../../agent/status/app.ts";
import { listenStatus, type StatusListener } from "../../agent/status/listen.ts";
import type { StatusSource } from "../../agent/status/source.ts";
import {
  chunked,
  exchange,
  expectHonestConnection,
  head,
  type RawResponse,
} from "../functions/api/raw-http.ts";

let dir: string;
let listener: StatusListener;
let path: string;

const source: StatusSource = {
  node: () => ({
    name: "node-a",
    version: "0.1.0",
    controlPlane: "",
    connected: false,
    lastHeartbeatAt: null,
  }),
  volumes: () => [],
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "pagedisk-status-edge-"));
  path = join(dir, "status.sock");
  listener = await listenStatus(statusApp(source), `unix:${path}`);
});
afterAll(async () => {
  await listener?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** `{ error: { code, message } }` after checking status and content type; the code. */
function codeIn(res: RawResponse | undefined, status: number): string {
  expect(res?.status).toBe(status);
  expect(res?.headers["content-type"]).toMatch(/^application\/json/);
  const body = JSON.parse(res!.body) as { error: { code: unknown; message: unknown } };
  expect(typeof body.error.message).toBe("string");
  return body.error.code as string;
}

const health = () => head("GET /healthz HTTP/1.1");
// 2 MiB: more than node reads ahead in one go, so the 405 is ready before the body has arrived.
const big = Buffer.alloc(2 * 1024 * 1024, "a");

describe("the status API's connections", () => {
  it.each([
    ["Content-Length", { "Content-Length": big.length }, big],
    ["chunked", { "Transfer-Encoding": "chunked" }, chunked(big)],
  ] as const)("405 to a POST with a %s body: honest about the connection", async (_, headers, body) => {
    const got = await exchange({ path }, [head("POST /healthz HTTP/1.1", headers), body, health()], 2);
    expect(codeIn(got.responses[0], 405)).toBe("MethodNotAllowed");
    expectHonestConnection(got);
  });

  it("keeps the connection after a whole request: a 404, then the next one served", async () => {
    const got = await exchange({ path }, [head("GET /nope HTTP/1.1"), health()], 2);
    expect(codeIn(got.responses[0], 404)).toBe("NotFound");
    expect(got.responses[1]?.status).toBe(200);
  });

  it("431 for headers over the limit, in the error shape, and closes", async () => {
    const request = head("GET /healthz HTTP/1.1", { "X-Padding": "p".repeat(20_000) });
    const got = await exchange({ path }, [request], 2);
    expect(codeIn(got.responses[0], 431)).toBe("HeadersTooLarge");
    expect(got.closedByServer).toBe(true);
  });

  it("400 for malformed HTTP, in the error shape, and closes", async () => {
    const got = await exchange({ path }, ["NOT HTTP AT ALL\r\n\r\n"], 2);
    expect(codeIn(got.responses[0], 400)).toBe("MalformedRequest");
    expect(got.closedByServer).toBe(true);
  });
});
