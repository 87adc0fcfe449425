/**
 * The event log on Azurite, behind a proxy that shows what each request
 * asks the Table service: newest first across day tables, filters answered
 * by one index partition, pages that together list every event exactly
 * once, a batch per partition, the failure window across midnight, and
 * retention by whole tables.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event } from "../../../contract/event.ts";
import { failuresReportedSince } from "../../../functions/health/reported-failures.ts";
import { pruneEvents } from "../../../functions/registry/event-retention.ts";
import {
  continuationOf,
  type EventFilter,
  type EventHorizon,
  eventsNewestFirst,
  listEvents,
  type NewEvent,
  positionOf,
  recordEvent,
  recordEvents,
} from "../../../functions/registry/events.ts";
import { openRegistry, type Registry } from "../../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../../harness/fault-proxy.ts";
import { partitionOf, recordTableRequests } from "../../harness/table-requests.ts";

const HOUR = 3_600_000;
const START = Date.UTC(2025, 0, 1);
/** Two days after the last event: the listing starts at tables that were never made. */
const LATER: EventHorizon = { now: new Date(Date.UTC(2025, 0, 6, 12)), retentionDays: 30 };

let azurite: Azurite;
let proxy: FaultProxy;
/** Every registry here reaches Azurite through the proxy. */
let viaProxy: string;
let registry: Registry;
/** In time order: every 7 hours from 2025-01-01 to 01-04, alternating volumes and types. */
const recorded: Event[] = [];

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  proxy = await startFaultProxy(azurite.tableEndpoint!);
  viaProxy = azurite.connectionString.replace(
    /TableEndpoint=[^;]+/,
    `TableEndpoint=${proxy.blobEndpoint}`,
  );
  registry = await openRegistry(viaProxy);
  for (let i = 0; i < 12; i++) {
    recorded.push(
      await recordEvent(registry, new Date(START + i * 7 * HOUR), {
        type: i % 3 === 0 ? "volume-created" : "storage-failure",
        volume: i % 2 === 0 ? "even" : "odd",
        ...(i % 4 === 0 ? { node: "vm-1" } : {}),
        message: `event ${i}`,
        data: { i },
      }),
    );
  }
});
afterAll(async () => {
  await proxy?.close();
  await azurite?.dispose();
});

const newestFirst = () => [...recorded].reverse();

/** Every page of a listing, followed by continuation. */
async function allPages(
  filter: EventFilter,
  limit: number,
  horizon = LATER,
  on = registry,
): Promise<{ pages: Event[][]; continuations: number }> {
  const pages: Event[][] = [];
  let after: ReturnType<typeof positionOf>;
  let continuations = 0;
  for (;;) {
    const page = await listEvents(on, filter, { limit, after }, horizon);
    pages.push(page.items);
    if (page.continuation === null) return { pages, continuations };
    continuations++;
    after = positionOf(page.continuation);
    expect(after).toBeDefined();
  }
}

describe("listing", () => {
  it("lists newest first, across day tables, skipping days that have none", async () => {
    const { requests, stop } = recordTableRequests(proxy);
    const page = await listEvents(registry, {}, { limit: 100 }, LATER);
    stop();
    expect(page.items).toEqual(newestFirst());
    expect(page.continuation).toBeNull();
    // Each day of the retention is asked once, newest first (Jan 5, 6 and December have no table).
    expect(requests.map((r) => r.table).slice(0, 6)).toEqual([
      "events20250106",
      "events20250105",
      "events20250104",
      "events20250103",
      "events20250102",
      "events20250101",
    ]);
    expect(requests).toHaveLength(31);
  });

  it("filters by volume, node and type, together", async () => {
    const list = async (filter: EventFilter) =>
      (await listEvents(registry, filter, { limit: 100 }, LATER)).items.map((e) => e.data?.i);
    expect(await list({ volume: "odd" })).toEqual([11, 9, 7, 5, 3, 1]);
    expect(await list({ node: "vm-1" })).toEqual([8, 4, 0]);
    expect(await list({ type: "volume-created" })).toEqual([9, 6, 3, 0]);
    expect(await list({ volume: "odd", type: "volume-created" })).toEqual([9, 3]);
    expect(await list({ node: "vm-1", type: "volume-created" })).toEqual([0]);
    expect(await list({ volume: "even", node: "vm-1", type: "storage-failure" })).toEqual([8, 4]);
    expect(await list({ volume: "o'dd" })).toEqual([]);
  });

  it("reads one partition per query: the volume's, else the node's, the type's, all", async () => {
    const cases: Array<[EventFilter, string]> = [
      [{}, "all"],
      [{ type: "storage-failure" }, "t|storage-failure"],
      [{ node: "vm-1", type: "storage-failure" }, "n|vm-1"],
      [{ volume: "odd", node: "vm-1", type: "volume-created" }, "v|odd"],
      [{ volume: "o'dd" }, "v|o'dd"],
    ];
    for (const [filter, partition] of cases) {
      const { requests, stop } = recordTableRequests(proxy);
      await allPages(filter, 2);
      stop();
      expect(requests.length).toBeGreaterThan(0);
      for (const r of requests) {
        expect(r.method).toBe("GET");
        expect(partitionOf(r.filter), r.filter).toBe(partition);
      }
    }
  });

  it("a reader that wants the latest match only stops after the first page", async () => {
    // fencedFrom's question: the volume's latest event of one type.
    const horizon = { now: new Date(Date.UTC(2025, 0, 4, 23)), retentionDays: 30 };
    const { requests, stop } = recordTableRequests(proxy);
    const filter = { volume: "odd", type: "storage-failure" };
    const events = eventsNewestFirst(registry, filter, horizon, { pageSize: 1 });
    const first = await events.next();
    // What `break` does in a `for await`: the reader stops there.
    await events.return(undefined);
    stop();
    expect(first).toEqual({ done: false, value: recorded[11] });
    expect(requests.map((r) => `${r.table} ${partitionOf(r.filter)}`)).toEqual([
      "events20250104 v|odd",
    ]);
  });

  it("the partition check refuses what Azure would scan", () => {
    expect(partitionOf("PartitionKey eq 'all' and RowKey gt '1'")).toBe("all");
    expect(partitionOf("volume eq 'odd'")).toBeUndefined();
    expect(partitionOf("PartitionKey eq 'a' or PartitionKey eq 'b'")).toBeUndefined();
    const resume = "(PartitionKey eq 'a' and RowKey gt '1') or PartitionKey gt 'a'";
    expect(partitionOf(resume)).toBeUndefined();
    expect(partitionOf("PartitionKey eq 'a' and (type eq 'x' or type eq 'y')")).toBeUndefined();
    expect(partitionOf("PartitionKey ge 'a'")).toBeUndefined();
    expect(partitionOf(undefined)).toBeUndefined();
  });

  it("pages across day tables at every page size: newest first, no duplicate, no gap", async () => {
    for (let limit = 1; limit <= 13; limit++) {
      const { pages, continuations } = await allPages({}, limit);
      expect(pages.flat(), `limit ${limit}`).toEqual(newestFirst());
      expect(continuations).toBe(Math.ceil(12 / limit) - 1);
      for (const page of pages.slice(0, -1)) expect(page).toHaveLength(limit);
    }
  });

  it("pages a filtered listing too", async () => {
    const { pages } = await allPages({ type: "storage-failure" }, 3);
    expect(pages.map((p) => p.map((e) => e.data?.i))).toEqual([
      [11, 10, 8],
      [7, 5, 4],
      [2, 1],
    ]);
  });

  it("a page that ends exactly at the last event has no continuation", async () => {
    const page = await listEvents(registry, { node: "vm-1" }, { limit: 3 }, LATER);
    expect(page.items).toHaveLength(3);
    expect(page.continuation).toBeNull();
  });

  it("lists nothing past the retention, though its day's table is still there", async () => {
    // Cut-off Jan 2 23:00: event 6 (Jan 2 18:00) is in a day that is read, 0-5 in older ones.
    const horizon = { now: new Date(Date.UTC(2025, 0, 3, 23)), retentionDays: 1 };
    const { pages } = await allPages({}, 2, horizon);
    expect(pages.flat().map((e) => e.data?.i)).toEqual([10, 9, 8, 7]);
    const old = (await listEvents(registry, { volume: "even" }, { limit: 10 }, horizon)).items;
    expect(old.map((e) => e.data?.i)).toEqual([10, 8]);
  });

  it("accepts only continuations it gave out", () => {
    const id = recorded[3]!.id;
    expect(positionOf(continuationOf({ rowKey: id }))).toEqual({ rowKey: id });
    const bad = ["", "abc", `${id}' or 1 eq 1`, `79910.${id}`, "8264067199999-0A1B2C3D"];
    for (const text of bad)
      expect(positionOf(Buffer.from(text).toString("base64url")), text).toBeUndefined();
  });
});

describe("recording", () => {
  it("writes 20 reported events with one transaction per partition they touch", async () => {
    const at = new Date(Date.UTC(2025, 1, 1, 12));
    const batch = await openRegistry(viaProxy, { prefix: "batch" });
    const first = { type: "node-ready", node: "vm-2", message: "makes the day's table" };
    await recordEvent(batch, at, first);
    const events: NewEvent[] = Array.from({ length: 20 }, (_, i) => ({
      type: i % 2 === 0 ? "throttled" : "storage-failure",
      volume: i < 10 ? "v-a" : "v-b",
      node: "vm-2",
      pool: "p1",
      message: `report ${i}`,
    }));
    proxy.resetCounts();
    const { requests, stop } = recordTableRequests(proxy);
    const written = await recordEvents(batch, at, events);
    stop();
    // all, v|v-a, v|v-b, n|vm-2, t|throttled, t|storage-failure
    expect(proxy.received()).toBe(6);
    expect(requests.every((r) => r.method === "POST" && r.table === "$batch")).toBe(true);

    // The same ids, whichever partition lists them.
    const horizon = { now: at, retentionDays: 1 };
    const ids = async (filter: EventFilter) =>
      new Set((await listEvents(batch, filter, { limit: 100 }, horizon)).items.map((e) => e.id));
    const all = await ids({});
    const ready = await ids({ type: "node-ready" });
    expect(all).toEqual(new Set([...written.map((e) => e.id), ...ready]));
    expect(await ids({ node: "vm-2", type: "storage-failure" })).toEqual(
      new Set(written.filter((_, i) => i % 2 === 1).map((e) => e.id)),
    );
    expect(await ids({ volume: "v-b" })).toEqual(new Set(written.slice(10).map((e) => e.id)));
    expect((await ids({ type: "throttled" })).size).toBe(10);
  });

  it("makes the day's table on its first write", async () => {
    const fresh = await openRegistry(viaProxy, { prefix: "fresh" });
    const at = new Date(Date.UTC(2025, 2, 3, 4));
    const created = { type: "volume-created", volume: "v", message: "m" };
    const event = await recordEvent(fresh, at, created);
    const tables: string[] = [];
    for await (const t of fresh.service.listTables()) tables.push(t.name!);
    expect(tables).toContain("freshevents20250303");
    const horizon = { now: at, retentionDays: 1 };
    const page = await listEvents(fresh, { volume: "v" }, { limit: 5 }, horizon);
    expect(page.items).toEqual([event]);
  });
});

describe("failures reported since", () => {
  const midnight = Date.UTC(2025, 0, 11);
  let failures: Registry;

  beforeAll(async () => {
    failures = await openRegistry(viaProxy, { prefix: "failures" });
    const at = (ms: number, event: NewEvent) => recordEvent(failures, new Date(ms), event);
    const failure = (pool: string, message: string) => ({ type: "storage-failure", pool, message });
    await at(midnight - 120_000, failure("p4", "before the window"));
    await at(midnight - 60_000, { ...failure("p1", "p1 at since"), node: "vm-1" });
    await at(midnight - 50_000, { type: "replica-offline", pool: "p1", message: "p1 later" });
    await at(midnight - 40_000, { type: "pool-health-changed", pool: "p5", message: "no failure" });
    await at(midnight + 10_000, {
      type: "replica-offline",
      pool: "p3",
      message: "a lost writer's",
      data: { replica: "r", stale: true },
    });
    await at(midnight + 20_000, { ...failure("p2", "p2 after midnight"), node: "vm-2" });
  });

  it("reads today's and yesterday's tables when the window crosses midnight", async () => {
    const { requests, stop } = recordTableRequests(proxy);
    const now = new Date(midnight + 30_000);
    const found = await failuresReportedSince(failures, new Date(midnight - 60_000), now);
    stop();
    expect(Object.fromEntries(found)).toEqual({
      p1: {
        at: new Date(midnight - 50_000).toISOString(),
        type: "replica-offline",
        message: "p1 later",
      },
      p2: {
        at: new Date(midnight + 20_000).toISOString(),
        type: "storage-failure",
        node: "vm-2",
        message: "p2 after midnight",
      },
    });
    expect(requests.map((r) => `${r.table} ${partitionOf(r.filter)}`).sort()).toEqual([
      "failuresevents20250110 t|replica-offline",
      "failuresevents20250110 t|storage-failure",
      "failuresevents20250111 t|replica-offline",
      "failuresevents20250111 t|storage-failure",
    ]);
  });

  it("reads only today's table when the window starts after midnight", async () => {
    const { requests, stop } = recordTableRequests(proxy);
    const found = await failuresReportedSince(
      failures,
      new Date(midnight + 5_000),
      new Date(midnight + 65_000),
    );
    stop();
    expect([...found.keys()]).toEqual(["p2"]);
    expect(new Set(requests.map((r) => r.table))).toEqual(new Set(["failuresevents20250111"]));
    expect(requests).toHaveLength(2);
  });

  it("counts a failure at the window's first millisecond, not one just before", async () => {
    const now = new Date(midnight + 30_000);
    const from = await failuresReportedSince(failures, new Date(midnight - 50_000), now);
    expect(from.get("p1")?.message).toBe("p1 later");
    const after = await failuresReportedSince(failures, new Date(midnight - 49_999), now);
    expect(after.has("p1")).toBe(false);
    expect([...after.keys()]).toEqual(["p2"]);
  });
});

describe("retention", () => {
  let kept: Registry;
  const day = (n: number) => new Date(Date.UTC(2025, 4, n, 12));

  beforeAll(async () => {
    kept = await openRegistry(viaProxy, { prefix: "kept" });
    for (let n = 1; n <= 5; n++)
      await recordEvent(kept, day(n), { type: "node-ready", node: "vm", message: `day ${n}` });
    // Another registry whose own tables fall in the name range, and one whose day tables do not.
    await openRegistry(viaProxy, { prefix: "keptevents1" });
    const other = await openRegistry(viaProxy, { prefix: "other" });
    await recordEvent(other, day(1), { type: "node-ready", message: "other" });
  });

  const tableNames = async () => {
    const names: string[] = [];
    for await (const t of kept.service.listTables()) names.push(t.name!);
    return names.sort();
  };
  const messages = async (horizon: EventHorizon) =>
    (await listEvents(kept, { node: "vm" }, { limit: 10 }, horizon)).items.map((e) => e.message);

  it("refuses a retention that is not a whole number of days, at least one", async () => {
    for (const bad of [0, -1, 1.5, Number.NaN])
      await expect(pruneEvents(kept, day(5), bad)).rejects.toThrow(RangeError);
  });

  it("deletes exactly the day tables past the retention, found by a range of names", async () => {
    // Before pruning, the listing already stops at the retention.
    expect(await messages({ now: day(5), retentionDays: 2 })).toEqual(["day 5", "day 4", "day 3"]);
    const { requests, stop } = recordTableRequests(proxy);
    const deleted = await pruneEvents(kept, day(5), 2);
    stop();
    expect(deleted).toEqual(["keptevents20250501", "keptevents20250502"]);
    const query = requests.find((r) => r.method === "GET");
    expect(query?.filter).toBe("TableName ge 'keptevents0' and TableName lt 'keptevents20250503'");
    expect(requests.filter((r) => r.method === "DELETE")).toHaveLength(2);

    const names = await tableNames();
    expect(names.filter((n) => /^keptevents\d{8}$/.test(n))).toEqual([
      "keptevents20250503",
      "keptevents20250504",
      "keptevents20250505",
    ]);
    expect(names).toContain("keptevents1pools");
    expect(names).toContain("otherevents20250501");
    // A longer retention now finds only what was kept; the deleted days read as empty.
    expect(await messages({ now: day(5), retentionDays: 30 })).toEqual(["day 5", "day 4", "day 3"]);
    expect(await pruneEvents(kept, day(5), 2)).toEqual([]);
  });

  it("keeps a day until all of it is past the retention", async () => {
    // On May 6 at 23:59, May 4 ended less than two days ago.
    expect(await pruneEvents(kept, new Date(Date.UTC(2025, 4, 6, 23, 59)), 2)).toEqual([
      "keptevents20250503",
    ]);
    const may7 = new Date(Date.UTC(2025, 4, 7));
    expect(await pruneEvents(kept, may7, 2)).toEqual(["keptevents20250504"]);
  });
});
