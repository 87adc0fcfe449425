/**
 * Events through the API: what the control plane records about its own
 * operations, newest first, filtered and paged with continuation tokens.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event, EventPage } from "../../../contract/event.ts";
import { type ControlPlaneFixture, errorOf, jsonOf, startControlPlane } from "../fixture.ts";

let cp: ControlPlaneFixture;
beforeAll(async () => {
  cp = await startControlPlane();
  const steps: Array<[string, string, unknown?]> = [
    [
      "POST",
      "/api/v1/pools",
      { name: "p1", auth: { kind: "connectionString", connectionString: cp.connectionString } },
    ],
    ["POST", "/api/v1/volumes", { name: "a", sizeBytes: 512 }],
    ["POST", "/api/v1/volumes", { name: "b", sizeBytes: 512 }],
    ["PATCH", "/api/v1/volumes/a", { failover: "manual" }],
    ["DELETE", "/api/v1/volumes/b"],
  ];
  for (const [method, path, body] of steps)
    expect((await cp.call(method, path, body)).status).toBeLessThan(300);
});
afterAll(() => cp?.dispose());

const list = async (query: string) =>
  jsonOf<EventPage>(await cp.call("GET", `/api/v1/events${query}`), 200);
const summary = (events: Event[]) => events.map((e) => `${e.type} ${e.volume ?? e.pool}`);

describe("events API", () => {
  it("lists what happened, newest first", async () => {
    const page = await list("");
    expect(summary(page.items)).toEqual([
      "volume-deleted b",
      "volume-updated a",
      "volume-created b",
      "volume-created a",
      "pool-registered p1",
    ]);
    expect(page.continuation).toBeNull();
    expect(page.items[1]?.data).toEqual({ failover: "manual" });
  });

  it("filters by volume and type", async () => {
    expect(summary((await list("?volume=a")).items)).toEqual([
      "volume-updated a",
      "volume-created a",
    ]);
    expect(summary((await list("?type=volume-created")).items)).toEqual([
      "volume-created b",
      "volume-created a",
    ]);
    expect((await list("?node=vm-1")).items).toEqual([]);
  });

  it("pages with the continuation token until there is none", async () => {
    const seen: string[] = [];
    let query = "?limit=2";
    for (let pages = 1; ; pages++) {
      const page = await list(query);
      seen.push(...summary(page.items));
      if (!page.continuation) {
        expect(pages).toBe(3);
        break;
      }
      query = `?limit=2&continuation=${encodeURIComponent(page.continuation)}`;
    }
    expect(seen).toEqual(summary((await list("")).items));
  });

  it("refuses a continuation it did not give out", async () => {
    const err = await errorOf(
      await cp.call("GET", "/api/v1/events?continuation=x'%20or%20''='"),
      400,
    );
    expect(err.code).toBe("InvalidRequest");
  });
});
