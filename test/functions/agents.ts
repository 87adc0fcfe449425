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
import { beat as sendBeat } from "../../agent/control/liveness-beat.ts";
import type { DesiredState, JoinResponse, NodeReport } from "../../contract/node.ts";
import type { SweepPolicy, SweepReport } from "../../functions/health/sweep.ts";
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
 * `fixture()` and `joinToken()` are read at call time, because test files
 * start the control plane and issue the token in `beforeAll`.
 */
export function agentNodes(
  fixture: () => ControlPlaneFixture,
  joinToken: () => string,
  now: () => Date = () => new Date(),
) {
  const credentials = new Map<string, string>();
  const rows = new Map<string, string>();

  async function join(name: string): Promise<void> {
    const res = await fixture().app.request("/api/v1/nodes/join", {
      method: "POST",
      headers: { authorization: `Bearer ${joinToken()}`, "content-type": "application/json" },
      body: JSON.stringify({ name }),
    });
    credentials.set(name, (await jsonOf<JoinResponse>(res, 201)).credential);
  }

  /** `name`'s desired state, as its agent fetches it. */
  async function desired(name: string): Promise<DesiredState> {
    const res = await fixture().app.request(`/api/v1/nodes/${name}/desired`, {
      headers: { authorization: `Bearer ${credentials.get(name)}` },
    });
    const state = await jsonOf<DesiredState>(res, 200);
    rows.set(name, state.liveness.url);
    return state;
  }

  /** One report of `name` with `body` (a NodeReport); answered 200. */
  async function report(name: string, body: z.input<typeof NodeReport>): Promise<void> {
    const res = await fixture().app.request(`/api/v1/nodes/${name}/report`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${credentials.get(name)}`,
        "content-type": "application/json",
      },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(200);
  }

  /** One heartbeat of each of `names`, at `now()`; each lands. */
  async function heartbeat(...names: string[]): Promise<void> {
    for (const name of names) {
      const url = rows.get(name) ?? (await desired(name)).liveness.url;
      const outcome = await sendBeat(url, "*", { at: now().toISOString() });
      expect(outcome.kind, `${name}'s heartbeat`).toBe("landed");
    }
  }

  return { join, desired, heartbeat, report, credential: (name: string) => credentials.get(name) };
}
