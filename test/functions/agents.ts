/**
 * Nodes that join, beat and report as agents do, for tests that drive the
 * sweeper; and the report of a sweep pass that found nothing to do.
 *
 * A beat is the agent's own (agent/control/liveness-beat.ts): a MERGE of
 * the node's liveness row through the SAS its desired state handed over.
 * It claims the time `now()` says, so that a sweeper on the same fake clock
 * sees it at that time.
 */
import { expect } from "vitest";
import type { z } from "zod";
import { type BeatOutcome, beat as sendBeat } from "../../agent/control/liveness-beat.ts";
import type { DesiredState, JoinResponse, NodeReport } from "../../contract/node.ts";
import type { ControlPlane } from "../../functions/control-plane.ts";
import { type SweepOptions, type SweepPolicy, type SweepReport, sweep } from "../../functions/health/sweep.ts";
import { type ControlPlaneFixture, jsonOf } from "./fixture.ts";

/**
 * A policy for tests on a fake clock that jumps seconds at a time: beats
 * every 5 s, SUSPECT after 15 s, LOST after 45 s, passes a minute apart (so
 * that a jump between two passes is no gap in the sweeper's watch).
 */
export const STEPPED_POLICY: SweepPolicy = {
  heartbeatIntervalMs: 5_000,
  suspectAfterMs: 15_000,
  lostAfterMs: 45_000,
  sweepIntervalMs: 60_000,
  stuckAfterMs: 60_000,
};

/**
 * Where a fake clock starts: a minute ahead of the real time, so that the
 * time beats claim counts over the service's own stamp of them as the real
 * time goes by (functions/registry/liveness.ts `lastBeatOf`).
 */
export function aheadOfRealTime(): number {
  return Date.now() + 60_000;
}

export const NOTHING_SWEPT: SweepReport = {
  suspect: [],
  lost: [],
  fenced: [],
  failedOver: [],
  detached: [],
  waiting: [],
  recovered: [],
  ready: [],
};

/**
 * For a pass on a fake clock that must find nobody to look at again: a
 * second look would otherwise really sleep until its deadline.
 */
export const NO_SECOND_LOOK: SweepOptions = {
  wait: async () => {
    throw new Error("unexpected second look");
  },
};

/**
 * One sweep pass by `cp` on a fake clock: a second look at a suspect moves
 * the clock by what it waits (`advance`), then `meanwhile` runs (the
 * witnesses beating on, as live agents would while the pass waited).
 */
export function sweepOnFakeClock(
  cp: ControlPlane,
  advance: (ms: number) => void,
  meanwhile: () => Promise<void>,
  policy: SweepPolicy = STEPPED_POLICY,
): Promise<SweepReport> {
  return sweep(cp, policy, {
    wait: async (ms) => {
      advance(ms);
      await meanwhile();
    },
  });
}

/**
 * `fixture()` and `joinToken()` are read at call time, because test files
 * start the control plane and issue the token in `beforeAll`.
 */
export function agentNodes(
  fixture: () => ControlPlaneFixture,
  joinToken: () => string,
  now: () => Date = () => new Date(),
) {
  const credentials = new Map<string, string>();
  /** Each node's liveness row, and the ETag its next conditional beat is on. */
  const rows = new Map<string, { url: string; etag: string }>();

  /** Join `name` (with `facts`, when given) as its agent does; answered 201. */
  async function join(name: string, facts?: Record<string, unknown>): Promise<JoinResponse> {
    const res = await fixture().app.request("/api/v1/nodes/join", {
      method: "POST",
      headers: { authorization: `Bearer ${joinToken()}`, "content-type": "application/json" },
      body: JSON.stringify({ name, ...(facts === undefined ? {} : { facts }) }),
    });
    const joined = await jsonOf<JoinResponse>(res, 201);
    credentials.set(name, joined.credential);
    return joined;
  }

  /**
   * `name`'s desired state, as its agent fetches it (`query` appended to the
   * path); its next conditional beat is on the liveness ETag it gives.
   */
  async function desired(name: string, query = ""): Promise<DesiredState> {
    const res = await fixture().app.request(`/api/v1/nodes/${name}/desired${query}`, {
      headers: { authorization: `Bearer ${credentials.get(name)}` },
    });
    const state = await jsonOf<DesiredState>(res, 200);
    rows.set(name, { url: state.liveness.url, etag: state.liveness.etag });
    return state;
  }

  /**
   * One report of `name` with `body` (a NodeReport); answered 200 with the
   * node's desired generation.
   */
  async function report(
    name: string,
    body: z.input<typeof NodeReport>,
  ): Promise<{ desiredGeneration: number }> {
    const res = await fixture().app.request(`/api/v1/nodes/${name}/report`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${credentials.get(name)}`,
        "content-type": "application/json",
      },
      body: JSON.stringify(body),
    });
    return jsonOf<{ desiredGeneration: number }>(res, 200);
  }

  /** One heartbeat of each of `names`, at `now()`, whatever their rows hold (`If-Match: *`); each lands. */
  async function heartbeat(...names: string[]): Promise<void> {
    for (const name of names) {
      const row = rows.get(name) ?? (await desired(name)).liveness;
      const outcome = await sendBeat(row.url, "*", { at: now().toISOString() });
      expect(outcome.kind, `${name}'s heartbeat`).toBe("landed");
      if (outcome.kind === "landed") rows.set(name, { url: row.url, etag: outcome.etag });
    }
  }

  /**
   * `name`'s next beat, at `now()`, as its agent sends it: conditional on
   * the last ETag it saw (of its last desired state, or of its last beat
   * that landed). `rung` when the row was rung since.
   */
  async function nextBeat(name: string): Promise<BeatOutcome["kind"]> {
    const row = rows.get(name);
    if (!row) throw new Error(`${name} has not fetched its desired state: it has no row to beat`);
    const outcome = await sendBeat(row.url, row.etag, { at: now().toISOString() });
    if (outcome.kind === "landed") row.etag = outcome.etag;
    return outcome.kind;
  }

  return {
    join,
    desired,
    heartbeat,
    nextBeat,
    report,
    credential: (name: string) => credentials.get(name),
  };
}
