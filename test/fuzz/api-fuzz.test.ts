/**
 * The API fuzzer (api-fuzzer.ts) at the size of `npm test`: requests made
 * from the served OpenAPI document, every operation, each broken in one
 * way. `npm run soak` runs the same with PAGEDISK_FUZZ_API_REQUESTS in the
 * thousands; PAGEDISK_FUZZ_SEED replays a run.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ControlPlaneFixture, startControlPlane } from "../functions/fixture.ts";
import { type ApiFuzzTarget, fuzzApi, operationIds, prepareApiFuzz } from "./api-fuzzer.ts";
import { fuzzSeed, sizeFromEnv, summaryLine } from "./random.ts";

const REQUESTS = sizeFromEnv("PAGEDISK_FUZZ_API_REQUESTS", 300);

let fx: ControlPlaneFixture;
let target: ApiFuzzTarget;

beforeAll(async () => {
  fx = await startControlPlane();
  target = await prepareApiFuzz(fx);
});
afterAll(() => fx?.dispose());

describe("API fuzz", () => {
  it(`${REQUESTS} fuzzed requests: no 5xx, every 4xx in the error shape, nothing changed by a refused one`, async () => {
    const seed = fuzzSeed();
    const report = await fuzzApi({ requests: REQUESTS, seed, target });
    console.log(`${summaryLine("api fuzz", seed, report.counts)}; accepted ${report.accepted}`);
    expect(report.problems).toEqual([]);
    expect(report.counts).toEqual({ tried: REQUESTS, "5xx": 0, "bad error shape": 0, "changed registry": 0 });
    // The document has every operation of the app, and each was fuzzed (they take turns).
    expect(operationIds(target).length).toBeGreaterThanOrEqual(30);
    if (REQUESTS >= operationIds(target).length) {
      expect(Object.entries(report.operations).filter(([, n]) => n === 0)).toEqual([]);
    }
  }, Math.max(120_000, REQUESTS * 200));

  it("counts a 500, a 4xx without the error body, and a refused request that changed the registry", async () => {
    const report = await fuzzApi({
      requests: 2 * operationIds(target).length,
      seed: 1,
      target,
      // Broken routes, put in front of the app: one fails, one answers in plain
      // text, one changes the registry (a token is issued) and then says 400.
      around: async (request, app) => {
        const { pathname } = new URL(request.url);
        if (request.method === "GET" && pathname === "/api/v1/volumes") return new Response("boom", { status: 500 });
        const res = await app(request);
        if (res.status >= 400 && pathname.startsWith("/api/v1/pools/")) {
          return new Response("no", { status: res.status, headers: { "content-type": "text/plain" } });
        }
        if (request.method === "GET" && pathname === "/api/v1/tokens") {
          await fx.call("POST", "/api/v1/tokens", {});
          return Response.json({ error: { code: "InvalidRequest", message: "refused" } }, { status: 400 });
        }
        return res;
      },
    });
    expect(report.counts["5xx"]).toBeGreaterThan(0);
    expect(report.counts["bad error shape"]).toBeGreaterThan(0);
    expect(report.counts["changed registry"]).toBeGreaterThan(0);
    expect(report.problems.join("\n")).toMatch(/listTokens .*refused, yet changed the registry/);
  });
});
