/**
 * The judge on its own, with the numbers of the default policy: silence
 * counts only while the heartbeats' path is known to work, a fresh beat is
 * evidence of life whatever the path did, and the deadline of a suspect is
 * where its second look goes.
 */
import { describe, expect, it } from "vitest";
import {
  judgeLiveness,
  type NodeBeat,
  type PathState,
} from "../../../functions/health/liveness-judge.ts";
import { DEFAULT_SWEEP_POLICY as POLICY } from "../../../functions/health/sweep.ts";

const T0 = 1_000_000_000;
const s = (n: number) => n * 1000;
/** A pass 7.5 s ago that knew the path worked since long before. */
const WATCHING: PathState = { lastPassAt: T0 - 7_500, pathSince: T0 - s(600) };

function node(name: string, lastBeatAgo: number | undefined, extra: Partial<NodeBeat> = {}): NodeBeat {
  return {
    node: name,
    state: "READY",
    lastBeatMs: lastBeatAgo === undefined ? undefined : T0 - lastBeatAgo,
    sinceMs: T0 - s(3600),
    ...extra,
  };
}

function verdicts(beats: NodeBeat[], path: PathState = WATCHING) {
  const j = judgeLiveness(beats, path, T0, POLICY);
  return { ...j, by: Object.fromEntries(j.nodes.map((n) => [n.node, n.verdict])) };
}

describe("judging nodes while the path is known to work", () => {
  it("keeps a node that beat within suspectAfter READY, suspects one past it, loses one past lostAfter", () => {
    const { by, pathNote } = verdicts([
      node("witness", 500),
      node("fresh", s(3.9)),
      node("quiet", s(4)),
      node("gone", s(8)),
    ]);
    expect(pathNote).toBeUndefined();
    expect(by).toEqual({ witness: "READY", fresh: "READY", quiet: "SUSPECT", gone: "LOST" });
  });

  it("watches a node a beat and a half late, still READY, with the deadline where it would be LOST", () => {
    const j = judgeLiveness(
      [node("witness", 0), node("on-time", 2_900), node("late", 3_000)],
      WATCHING,
      T0,
      POLICY,
    );
    expect(j.nodes.map((n) => [n.verdict, n.deadlineMs])).toEqual([
      ["READY", undefined],
      ["READY", undefined],
      ["READY", T0 - 3_000 + s(8)],
    ]);
  });

  it("leaves to the next pass a node that would be LOST only after it: no second look to wait for", () => {
    const patient = { ...POLICY, suspectAfterMs: s(30), lostAfterMs: s(60) };
    const j = judgeLiveness([node("witness", 0), node("late", s(3)), node("quiet", s(31))], WATCHING, T0, patient);
    expect(j.nodes.map((n) => [n.verdict, n.deadlineMs])).toEqual([
      ["READY", undefined],
      ["READY", undefined],
      ["SUSPECT", undefined],
    ]);
  });

  it("gives a suspect the deadline where it would be LOST, for the pass's second look", () => {
    const j = judgeLiveness([node("witness", 0), node("quiet", s(5))], WATCHING, T0, POLICY);
    expect(j.nodes[1]).toMatchObject({ verdict: "SUSPECT", deadlineMs: T0 - s(5) + s(8) });
    expect(j.nodes[0]!.deadlineMs).toBeUndefined();
  });

  it("brings a SUSPECT or LOST node back to READY on a fresh beat", () => {
    const { by } = verdicts([
      node("was-suspect", 100, { state: "SUSPECT" }),
      node("was-lost", 100, { state: "LOST" }),
    ]);
    expect(by).toEqual({ "was-suspect": "READY", "was-lost": "READY" });
  });

  it("keeps a LOST node LOST while it stays silent, never SUSPECT again", () => {
    const { by } = verdicts([node("witness", 0), node("dead", s(5), { state: "LOST" })]);
    expect(by.dead).toBe("LOST");
  });

  it("counts a node that never beat from when it joined", () => {
    const j = judgeLiveness(
      [node("witness", 0), node("new", undefined, { sinceMs: T0 - s(2) }), node("mute", undefined, { sinceMs: T0 - s(9) })],
      WATCHING,
      T0,
      POLICY,
    );
    expect(j.nodes.map((n) => n.verdict)).toEqual(["READY", "READY", "LOST"]);
  });
});

describe("judging nobody without evidence that the path works", () => {
  it("judges nobody while no node has beaten for three intervals, and forgets since when the path worked", () => {
    const j = judgeLiveness([node("a", s(6.1)), node("b", s(30))], WATCHING, T0, POLICY);
    expect(j.nodes.map((n) => n.verdict)).toEqual([undefined, undefined]);
    expect(j.path.pathSince).toBeNull();
    expect(j.pathNote).toMatch(/no heartbeat from any node for 6 s/);
  });

  it("counts silence from the pass that sees beats again, once the path was down", () => {
    const down: PathState = { lastPassAt: T0 - 7_500, pathSince: null };
    const j = judgeLiveness([node("back", 200), node("dead", s(60))], down, T0, POLICY);
    expect(j.path.pathSince).toBe(T0);
    expect(j.nodes.map((n) => n.verdict)).toEqual(["READY", "READY"]);
    // Eight seconds of a working path later (`back` beat 200 ms before that pass, `dead` still last
    // beat 68 s before it), the node that did not come back is LOST.
    const later = judgeLiveness(
      [node("back", 200), node("dead", s(68))].map((b) => ({ ...b, lastBeatMs: b.lastBeatMs! + s(8) })),
      j.path,
      T0 + s(8),
      POLICY,
    );
    expect(later.nodes.map((n) => n.verdict)).toEqual(["READY", "LOST"]);
  });

  it("counts silence from now after a gap in the sweeper's own passes (a deploy, an outage)", () => {
    const stale: PathState = { lastPassAt: T0 - s(60), pathSince: T0 - s(600) };
    const j = judgeLiveness([node("witness", 0), node("dead", s(50))], stale, T0, POLICY);
    expect(j.path.pathSince).toBe(T0);
    expect(j.nodes[1]!.verdict).toBe("READY");
    expect(j.pathNote).toMatch(/no pass for 60 s/);
  });

  it("counts silence from now on the first pass", () => {
    const j = judgeLiveness(
      [node("witness", 0), node("dead", s(50))],
      { lastPassAt: null, pathSince: null },
      T0,
      POLICY,
    );
    expect(j.nodes[1]!.verdict).toBe("READY");
    expect(j.pathNote).toBe("first pass: silence counts from now");
  });

  it("sees an outage that ended between two passes in the gaps most nodes report", () => {
    const beats = [
      node("a", 300, { gapMs: s(7) }),
      node("b", 900, { gapMs: s(6.5) }),
      node("c", 100, { gapMs: 2_000 }),
      node("slow", s(7.8)),
    ];
    const j = judgeLiveness(beats, WATCHING, T0, POLICY);
    expect(j.path.pathSince).toBe(T0);
    expect(j.pathNote).toMatch(/2 of 3 nodes beat again after a gap/);
    // The node that has not beaten again yet is not judged on the outage's silence.
    expect(j.nodes[3]!.verdict).toBe("READY");
  });

  it("does not take one node's own gap for an outage of the path", () => {
    const beats = [node("a", 300, { gapMs: s(9) }), node("b", 100, { gapMs: 2_000 }), node("c", 200), node("dead", s(8))];
    const j = judgeLiveness(beats, WATCHING, T0, POLICY);
    expect(j.pathNote).toBeUndefined();
    expect(j.nodes[3]!.verdict).toBe("LOST");
  });
});
