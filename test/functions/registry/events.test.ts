/**
 * The event log on Azurite: newest first across day partitions, filters,
 * and pages that together list every event exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event } from "../../../contract/event.ts";
import {
  continuationOf,
  listEvents,
  positionOf,
  recordEvent,
} from "../../../functions/registry/events.ts";
import { openRegistry, type Registry } from "../../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";

const HOUR = 3_600_000;
const START = Date.UTC(2025, 0, 1);

let azurite: Azurite;
let registry: Registry;
/** Recorded in time order: every 7 hours over ~3 days, alternating volumes and types. */
const recorded: Event[] = [];

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  registry = await openRegistry(azurite.connectionString);
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
afterAll(() => azurite?.dispose());

const newestFirst = () => [...recorded].reverse();

describe("events", () => {
  it("lists newest first, across days", async () => {
    const page = await listEvents(registry, {}, { limit: 100 });
    expect(page.items.map((e) => e.message)).toEqual(newestFirst().map((e) => e.message));
    expect(page.items[0]).toEqual(recorded[11]);
    expect(page.continuation).toBeNull();
  });

  it("filters by volume, node and type, together", async () => {
    const byVolume = await listEvents(registry, { volume: "odd" }, { limit: 100 });
    expect(byVolume.items.map((e) => e.data?.i)).toEqual([11, 9, 7, 5, 3, 1]);
    const byNode = await listEvents(registry, { node: "vm-1" }, { limit: 100 });
    expect(byNode.items.map((e) => e.data?.i)).toEqual([8, 4, 0]);
    const both = await listEvents(
      registry,
      { volume: "odd", type: "volume-created" },
      { limit: 100 },
    );
    expect(both.items.map((e) => e.data?.i)).toEqual([9, 3]);
    const none = await listEvents(registry, { volume: "o'dd" }, { limit: 100 });
    expect(none.items).toEqual([]);
  });

  it("pages through every event exactly once, with a continuation only while more remain", async () => {
    const seen: string[] = [];
    let after: ReturnType<typeof positionOf>;
    let pages = 0;
    for (;;) {
      const page = await listEvents(registry, {}, { limit: 5, after });
      pages++;
      seen.push(...page.items.map((e) => e.message));
      if (page.continuation === null) break;
      expect(page.items).toHaveLength(5);
      after = positionOf(page.continuation);
      expect(after).toBeDefined();
    }
    expect(pages).toBe(3);
    expect(seen).toEqual(newestFirst().map((e) => e.message));
  });

  it("pages a filtered listing too", async () => {
    const first = await listEvents(registry, { type: "storage-failure" }, { limit: 3 });
    const second = await listEvents(
      registry,
      { type: "storage-failure" },
      { limit: 3, after: positionOf(first.continuation!) },
    );
    expect([...first.items, ...second.items].map((e) => e.data?.i)).toEqual([11, 10, 8, 7, 5, 4]);
  });

  it("a page that ends exactly at the last event has no continuation", async () => {
    const page = await listEvents(registry, { node: "vm-1" }, { limit: 3 });
    expect(page.items).toHaveLength(3);
    expect(page.continuation).toBeNull();
  });

  it("accepts only continuations it gave out", () => {
    const token = continuationOf({ partitionKey: "79910", rowKey: "8264067199999-0a1b2c3d" });
    expect(positionOf(token)).toEqual({ partitionKey: "79910", rowKey: "8264067199999-0a1b2c3d" });
    for (const bad of ["", "abc", Buffer.from("79910.x' or 1 eq 1").toString("base64url")]) {
      expect(positionOf(bad)).toBeUndefined();
    }
  });
});
