/**
 * The default health settings, and what they promise: agents beat every
 * 2 s, a silent node is SUSPECT at 4 s and LOST at 8 s, and the sweeper
 * runs every 7.5 s. A pass that finds a suspect looks again at its
 * deadline, so a node that stops beating is LOST, and its volume failed
 * over, 8 to 11.5 s after its last beat in the sweeper's clock (without
 * the second look: up to 15.5 s). The settings that change these are read
 * and checked.
 *
 * Over Azurite on a fake clock, ahead of the real time so that the time
 * beats claim counts: agents beat every 2 s, a pass runs every 7.5 s (its
 * second look moves the clock, agents beating on meanwhile), and fifteen
 * nodes stop beating 14 s apart, their last beats falling once on every
 * half second between two passes. `alive` beats throughout: it witnesses
 * that the heartbeats' path works, and takes the volumes. Two nodes that
 * stop a few seconds apart, suspects in the same pass, are held to the
 * same bound.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event } from "../../../contract/event.ts";
import type { Node } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { DEFAULT_REPAIR_POLICY } from "../../../functions/health/repair-policy.ts";
import {
  DEFAULT_SWEEP_POLICY,
  SWEEP_SCHEDULE,
  type SweepReport,
  sweep,
} from "../../../functions/health/sweep.ts";
import { LOCAL_SWEEP_INTERVAL_MS } from "../../../functions/local.ts";
import { DEFAULT_EVENT_RETENTION_DAYS, listEvents } from "../../../functions/registry/events.ts";
import { settingsFrom } from "../../../functions/settings.ts";
import { agentNodes, aheadOfRealTime } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

const POLICY = DEFAULT_SWEEP_POLICY;
const BEAT_MS = POLICY.heartbeatIntervalMs;
const PASS_MS = LOCAL_SWEEP_INTERVAL_MS;
/** The latest a node may be LOST after its last beat: a pass just short of suspectAfter, then the next. */
const LATEST_MS = 11_500;
/** Beats 2 s apart and passes 7.5 s apart meet again after 30 s: fifteen phases, half a second apart. */
const DYING = Array.from({ length: 15 }, (_, i) => `dies-${i}`);

let fx: ControlPlaneFixture;
let nowMs = aheadOfRealTime();
let token: IssuedToken;
const reported: unknown[] = [];
const { join, heartbeat } = agentNodes(
  () => fx,
  () => token.token,
  () => new Date(nowMs),
);

/** One pass of the sweeper, whose second look waits with `wait` on the fake clock. */
function pass(wait: (ms: number) => Promise<void>): Promise<SweepReport> {
  const cp = controlPlane({
    registry: fx.registry,
    now: () => new Date(nowMs),
    report: (e) => reported.push(e),
  });
  return sweep(cp, POLICY, { wait });
}

/** Volume `v-<node>`, attached to `node`, and allowed on `alive` besides. */
async function attachedTo(node: string): Promise<void> {
  await jsonOf(
    await fx.call("POST", "/api/v1/volumes", {
      name: `v-${node}`,
      sizeBytes: 64 * 1024,
      requiredNodes: [node, "alive"],
    }),
    201,
  );
  await jsonOf(await fx.call("POST", `/api/v1/volumes/v-${node}/attach`, { node }), 200);
}

async function lostEvent(node: string): Promise<Event> {
  const horizon = { now: new Date(nowMs), retentionDays: DEFAULT_EVENT_RETENTION_DAYS };
  const page = await listEvents(fx.registry, { node, type: "node-lost" }, { limit: 2 }, horizon);
  expect(page.items).toHaveLength(1);
  return page.items[0]!;
}

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs) });
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
});
afterAll(() => fx?.dispose());

describe("default health settings", () => {
  const base = { PAGEDISK_REGISTRY_CONNECTION_STRING: "UseDevelopmentStorage=true" };

  it("are beats every 2 s, SUSPECT at 4 s, LOST at 8 s and a pass every 7.5 s", () => {
    expect(DEFAULT_SWEEP_POLICY).toEqual({
      heartbeatIntervalMs: 2_000,
      suspectAfterMs: 4_000,
      lostAfterMs: 8_000,
      sweepIntervalMs: 7_500,
    });
    expect(settingsFrom(base).sweep).toEqual({
      ...DEFAULT_SWEEP_POLICY,
      repair: DEFAULT_REPAIR_POLICY,
    });
    expect(LOCAL_SWEEP_INTERVAL_MS).toBe(DEFAULT_SWEEP_POLICY.sweepIntervalMs);
    // The Azure timer: eight distinct seconds of every minute, 7.5 s apart on average. Whole
    // seconds make its passes 7 and 8 s apart, so there a node is LOST just under 12 s late at worst.
    const [seconds, ...rest] = SWEEP_SCHEDULE.split(" ");
    expect(rest).toEqual(["*", "*", "*", "*", "*"]);
    expect(new Set(seconds!.split(",").map(Number)).size).toBe(
      60_000 / DEFAULT_SWEEP_POLICY.sweepIntervalMs,
    );
  });

  it("are configurable", () => {
    const sweepOf = (env: Record<string, string>) => settingsFrom({ ...base, ...env }).sweep;
    expect(
      sweepOf({
        PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "5",
        PAGEDISK_SUSPECT_AFTER_SECONDS: "15",
        PAGEDISK_LOST_AFTER_SECONDS: "45",
      }),
    ).toEqual({
      ...DEFAULT_SWEEP_POLICY,
      heartbeatIntervalMs: 5_000,
      suspectAfterMs: 15_000,
      lostAfterMs: 45_000,
      repair: DEFAULT_REPAIR_POLICY,
    });
    // Each alone, against the defaults of the others.
    expect(sweepOf({ PAGEDISK_LOST_AFTER_SECONDS: "30" })).toMatchObject({ lostAfterMs: 30_000 });
    expect(sweepOf({ PAGEDISK_SUSPECT_AFTER_SECONDS: "6" })).toMatchObject({ suspectAfterMs: 6_000 });
    expect(sweepOf({ PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "1" })).toMatchObject({
      heartbeatIntervalMs: 1_000,
    });
  });

  it("are checked: whole seconds, LOST after SUSPECT, and neither within reach of a late beat", () => {
    const check = (env: Record<string, string>) => () => settingsFrom({ ...base, ...env });
    for (const bad of ["0", "-4", "2.5", "soon"]) {
      expect(check({ PAGEDISK_SUSPECT_AFTER_SECONDS: bad })).toThrow(
        /PAGEDISK_SUSPECT_AFTER_SECONDS must be a whole number of seconds/,
      );
    }
    expect(check({ PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "0" })).toThrow(
      /PAGEDISK_HEARTBEAT_INTERVAL_SECONDS must be a whole number of seconds/,
    );
    expect(check({ PAGEDISK_LOST_AFTER_SECONDS: "x" })).toThrow(
      /PAGEDISK_LOST_AFTER_SECONDS must be a whole number of seconds/,
    );
    // LOST no later than SUSPECT.
    expect(check({ PAGEDISK_SUSPECT_AFTER_SECONDS: "8" })).toThrow(
      /PAGEDISK_LOST_AFTER_SECONDS must be longer than PAGEDISK_SUSPECT_AFTER_SECONDS/,
    );
    // LOST within three beats, where the sweeper takes the silence for the path's and judges nobody.
    expect(
      check({
        PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "4",
        PAGEDISK_SUSPECT_AFTER_SECONDS: "8",
        PAGEDISK_LOST_AFTER_SECONDS: "12",
      }),
    ).toThrow(
      /PAGEDISK_LOST_AFTER_SECONDS must be longer than three PAGEDISK_HEARTBEAT_INTERVAL_SECONDS/,
    );
    // SUSPECT at one late beat.
    expect(check({ PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "3", PAGEDISK_LOST_AFTER_SECONDS: "10" })).toThrow(
      /PAGEDISK_SUSPECT_AFTER_SECONDS must be at least twice PAGEDISK_HEARTBEAT_INTERVAL_SECONDS/,
    );
    // Just inside every bound.
    expect(
      check({
        PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "3",
        PAGEDISK_SUSPECT_AFTER_SECONDS: "6",
        PAGEDISK_LOST_AFTER_SECONDS: "10",
      })().sweep,
    ).toMatchObject({ heartbeatIntervalMs: 3_000, suspectAfterMs: 6_000, lostAfterMs: 10_000 });
  });

  it("make a node that stops beating LOST, and fail its volume over, 8 to 11.5 s after its last beat", async () => {
    for (const name of ["alive", ...DYING]) await join(name);
    for (const name of DYING) await attachedTo(name);
    const start = nowMs;
    // One node dies every 14 s: each is LOST before the next falls silent, and as 14 s is
    // 6.5 s past a pass interval, the last beats fall on every half second between two passes.
    const lastBeat = new Map(DYING.map((name, i) => [name, start + BEAT_MS + 14_000 * i]));
    const beating = () => ["alive", ...DYING.filter((n) => lastBeat.get(n)! >= nowMs)];
    let nextBeat = start;
    /** Move the clock to `until`, every live agent beating on time; a beat at a pass's time comes first. */
    const advance = async (until: number) => {
      while (nextBeat <= until) {
        nowMs = nextBeat;
        await heartbeat(...beating());
        nextBeat += BEAT_MS;
      }
      nowMs = until;
    };

    await advance(start);
    // The first pass only starts watching: silence counts from it.
    expect((await pass((ms) => advance(nowMs + ms))).path).toBe("first pass: silence counts from now");
    /** The pass that found each node LOST: when it began, and what it did. */
    const lost = new Map<string, { passAt: number; report: SweepReport }>();
    for (let at = start + PASS_MS; lost.size < DYING.length; at += PASS_MS) {
      expect(at, "a pass well past the last death").toBeLessThan(lastBeat.get(DYING.at(-1)!)! + 3 * PASS_MS);
      await advance(at);
      const report = await pass((ms) => advance(nowMs + ms));
      expect(report.path).toBeUndefined();
      // Every suspect is settled within its pass: LOST at the second look, one node at a time.
      expect(report.suspect).toEqual(report.lost);
      expect(report.lost.length).toBeLessThanOrEqual(1);
      expect(report.ready).toEqual([]);
      for (const name of report.lost) lost.set(name, { passAt: at, report });
    }

    expect([...lost.keys()]).toEqual(DYING);
    let atSecondLook = 0;
    let atPassStart = 0;
    for (const [name, { passAt, report }] of lost) {
      const event = await lostEvent(name);
      const late = Date.parse(event.at) - lastBeat.get(name)!;
      expect(late, name).toBeGreaterThanOrEqual(POLICY.lostAfterMs);
      expect(late, name).toBeLessThanOrEqual(LATEST_MS);
      expect(event.data).toEqual({ silentMs: late });
      // SUSPECT and LOST in one pass, and the volume failed over by that same pass.
      expect(report.suspect, name).toEqual([name]);
      expect(report.failedOver, name).toEqual([`v-${name}`]);
      // A pass that began before the node's deadline found it LOST at its second look, at the
      // deadline itself; any other at the pass's start.
      if (passAt < lastBeat.get(name)! + POLICY.lostAfterMs) {
        expect(late, name).toBe(POLICY.lostAfterMs);
        atSecondLook++;
      } else {
        expect(Date.parse(event.at), name).toBe(passAt);
        atPassStart++;
      }
    }
    // Both ways were taken.
    expect(atSecondLook).toBeGreaterThan(0);
    expect(atPassStart).toBeGreaterThan(0);

    for (const name of DYING) {
      const v = await jsonOf<Volume>(await fx.call("GET", `/api/v1/volumes/v-${name}`), 200);
      expect(v.status, name).toMatchObject({ state: "ATTACHED", ownerNode: "alive" });
    }
    const alive = await jsonOf<Node>(await fx.call("GET", "/api/v1/nodes/alive"), 200);
    expect(alive.state).toBe("READY");
    expect(reported).toEqual([]);
  });

  // Each suspect gets its second look at its own deadline: pair-a, silent 7.9 s when the pass
  // starts (its deadline 0.1 s away), must not wait for pair-b's, silent 4 s (4 s away).
  it("make each of two nodes that stop 3.9 s apart LOST within 8 to 11.5 s of its last beat", async () => {
    for (const name of ["pair-a", "pair-b"]) {
      await join(name);
      await attachedTo(name);
    }
    const beatAt = async (ms: number, ...names: string[]) => {
      nowMs = ms;
      await heartbeat(...names);
    };
    const wait = async (ms: number) => beatAt(nowMs + ms, "alive");
    const t = nowMs + PASS_MS;
    await beatAt(t - 400, "alive", "pair-a", "pair-b");
    await beatAt(t, "alive", "pair-b");
    expect((await pass(wait)).lost).toEqual([]);
    await beatAt(t + 2_000, "alive", "pair-b");
    await beatAt(t + 3_500, "alive", "pair-b");
    await beatAt(t + 5_500, "alive");
    await beatAt(t + PASS_MS, "alive");
    const report = await pass(wait);
    expect(report.suspect).toEqual(["pair-a", "pair-b"]);
    expect(report.lost).toEqual(["pair-a", "pair-b"]);
    expect(report.failedOver).toEqual(["v-pair-a", "v-pair-b"]);
    for (const [name, last] of [["pair-a", t - 400], ["pair-b", t + 3_500]] as const) {
      const late = Date.parse((await lostEvent(name)).at) - last;
      expect(late, name).toBeGreaterThanOrEqual(POLICY.lostAfterMs);
      expect(late, name).toBeLessThanOrEqual(LATEST_MS);
    }
    expect(reported).toEqual([]);
  });
});
