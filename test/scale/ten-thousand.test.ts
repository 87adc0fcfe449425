/**
 * 10,000 simulated nodes beating at the default settings, against real
 * Azurite tables, judged by the real sweeper over several sweep intervals
 * (test/scale/fleet.ts: time is virtual, the tables are not). Three nodes
 * die along the way: they, and no other node, go SUSPECT and LOST. Every
 * pass reads the liveness table and the nodes a page per 1,000 rows and
 * writes nothing but its own record, so its transactions do not grow with
 * the passes, and a pass that judges nobody writes one row.
 *
 * How long a pass takes is measured by `npm run bench`, not asserted here.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodes } from "../../functions/registry/nodes.ts";
import { type Fleet, type PassResult, startFleet } from "./fleet.ts";

const NODES = 10_000;
const DOOMED = ["n-00042", "n-04242", "n-09999"];
let fleet: Fleet;
/** The run both tests read: a first pass, three intervals, then three more after DOOMED stop beating. */
let first: PassResult;
const before: PassResult[] = [];
const after: PassResult[] = [];
let states: Map<string, string>;

beforeAll(async () => {
  fleet = await startFleet({ nodes: NODES });
  first = await fleet.pass();
  for (let i = 0; i < 3; i++) before.push(await fleet.nextPass());
  fleet.kill(...DOOMED);
  for (let i = 0; i < 3; i++) after.push(await fleet.nextPass());
  states = new Map((await nodes(fleet.registry).list()).map((r) => [r.value.name, r.value.state]));
}, 1_500_000);
afterAll(() => fleet?.close());

describe(`${NODES.toLocaleString("en-US")} nodes at the default settings`, () => {
  it("are judged over several sweep intervals; only the dead ones are SUSPECT and LOST", () => {
    expect(first.report.path).toBe("first pass: silence counts from now");
    for (const { report } of before) expect([...report.suspect, ...report.lost, ...report.ready]).toEqual([]);
    const judged = { suspect: new Set<string>(), lost: new Set<string>() };
    for (const { report } of after) {
      for (const n of report.suspect) judged.suspect.add(n);
      for (const n of report.lost) judged.lost.add(n);
      expect(report.ready).toEqual([]);
    }
    expect([...judged.suspect].sort()).toEqual(DOOMED);
    expect([...judged.lost].sort()).toEqual(DOOMED);
    expect(states.size).toBe(NODES);
    expect([...states].filter(([, s]) => s !== "READY").map(([n]) => n).sort()).toEqual(DOOMED);
    expect(states.get(DOOMED[0]!)).toBe("LOST");
  });

  it("costs each pass the same few Table transactions: a page per 1,000 rows, and its own record", () => {
    // Passes that judged nobody: the state read, the liveness scan and the node list (10
    // pages each), the pools, the failure window, the volumes, the pools again, the state write.
    const passes = [...before, ...after];
    const quiet = passes.filter((p) => p.report.suspect.length + p.report.lost.length === 0);
    expect(quiet.length).toBeGreaterThanOrEqual(3);
    const counts = new Set(quiet.map((p) => p.transactions));
    expect(counts.size).toBe(1);
    const [tx] = [...counts];
    expect(tx).toBeLessThanOrEqual(2 * Math.ceil(NODES / 1000) + 10);
    console.log(
      `scale: ${NODES} nodes, ${tx} Table transactions per quiet pass; passes took ${passes.map((p) => Math.round(p.ms)).join(", ")} ms`,
    );
  });
});
