/**
 * The local control plane's HTTP edge over bare sockets: an answer given
 * before the request's body arrived (413, 401) either closes honestly
 * (`Connection: close`, then closed) or keeps a connection that serves the
 * next request; what node:http refuses itself (headers over its limit,
 * malformed HTTP) comes in the API's error shape.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorBody } from "../../../contract/errors.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../../functions/local.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";
import { chunked, exchange, expectHonestConnection, head, type RawResponse } from "./raw-http.ts";

let azurite: Azurite;
let stateDir: string;
let local: LocalControlPlane;
let port: number;
let auth: Record<string, string>;

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  stateDir = await mkdtemp(join(tmpdir(), "pagedisk-http-edge-"));
  local = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir,
    log: () => {},
  });
  port = Number(new URL(local.apiUrl).port);
  auth = { Authorization: `Bearer ${local.adminKey}` };
});
afterAll(async () => {
  await local?.close();
  await azurite?.dispose();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

/** The API's error body, after checking status and content type. */
function errorIn(res: RawResponse | undefined, status: number): ErrorBody["error"] {
  expect(res?.status).toBe(status);
  expect(res?.headers["content-type"]).toMatch(/^application\/json/);
  return ErrorBody.parse(JSON.parse(res!.body)).error;
}

const listPools = () => head("GET /api/v1/pools HTTP/1.1", auth);

describe("an answer before the body arrived", () => {
  // 2 MiB: far over the 64 KiB limit, more than node reads ahead in one go.
  const big = Buffer.alloc(2 * 1024 * 1024, "a");

  it("413 for a Content-Length over the limit: honest about the connection", async () => {
    const request = head("POST /api/v1/volumes HTTP/1.1", {
      ...auth,
      "Content-Type": "application/json",
      "Content-Length": big.length,
    });
    const got = await exchange({ port }, [request, big, listPools()], 2);
    expect(errorIn(got.responses[0], 413).code).toBe("PayloadTooLarge");
    expectHonestConnection(got);
  });

  it("413 for a chunked body over the limit: honest about the connection", async () => {
    const request = head("POST /api/v1/volumes HTTP/1.1", {
      ...auth,
      "Content-Type": "application/json",
      "Transfer-Encoding": "chunked",
    });
    const got = await exchange({ port }, [request, chunked(big), listPools()], 2);
    expect(errorIn(got.responses[0], 413).code).toBe("PayloadTooLarge");
    expectHonestConnection(got);
  });

  it("401 to a POST, answered before its body is read: honest about the connection", async () => {
    // Under the body limit, which is checked before the credential.
    const body = Buffer.alloc(60 * 1024, "a");
    const request = head("POST /api/v1/volumes HTTP/1.1", {
      "Content-Type": "application/json",
      "Content-Length": body.length,
    });
    const got = await exchange({ port }, [request, body, listPools()], 2);
    expect(errorIn(got.responses[0], 401).code).toBe("Unauthorized");
    expectHonestConnection(got);
  });

  it("keeps the connection when the request was whole: a 401, then the next request served", async () => {
    const got = await exchange({ port }, [head("GET /api/v1/pools HTTP/1.1"), listPools()], 2);
    expect(errorIn(got.responses[0], 401).code).toBe("Unauthorized");
    expect(got.responses[0]?.headers.connection).toBe("keep-alive");
    expect(got.responses[1]?.status).toBe(200);
  });
});

describe("what node:http refuses before the app", () => {
  it("431 for headers over the limit, in the error shape, and closes", async () => {
    const request = head("GET /api/v1/pools HTTP/1.1", { ...auth, "X-Padding": "p".repeat(20_000) });
    const got = await exchange({ port }, [request], 2);
    expect(errorIn(got.responses[0], 431).code).toBe("HeadersTooLarge");
    expect(got.responses[0]?.headers.connection).toBe("close");
    expect(got.closedByServer).toBe(true);
  });

  it("400 for malformed HTTP, in the error shape, and closes", async () => {
    for (const garbage of ["NOT HTTP AT ALL\r\n\r\n", "GET /api/v1/pools HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"]) {
      const got = await exchange({ port }, [garbage], 2);
      expect(errorIn(got.responses[0], 400).code).toBe("MalformedRequest");
      expect(got.closedByServer).toBe(true);
    }
  });

  it("still serves new connections afterwards", async () => {
    const got = await exchange({ port }, [listPools()], 1);
    expect(got.responses[0]?.status).toBe(200);
  });
});
