/**
 * Nodes that join and heartbeat through the API as agents do, for tests that
 * drive the sweeper; and the report of a sweep pass that found nothing to do.
 */
import { expect } from "vitest";
import type { z } from "zod";
import type { Heartbeat, JoinResponse } from "../../contract/node.ts";
import type { SweepReport } from "../../functions/health/sweep.ts";
import { type ControlPlaneFixture, jsonOf } from "./fixture.ts";

export const NOTHING_SWEPT: SweepReport = {
  suspect: [],
  lost: [],
  fenced: [],
  failedOver: [],
  detached: [],
  waiting: [],
  recovered: [],
};

/**
 * `fixture()` and `joinToken()` are read at call time, because test files
 * start the control plane and issue the token in `beforeAll`.
 */
export function agentNodes(fixture: () => ControlPlaneFixture, joinToken: () => string) {
  const credentials = new Map<string, string>();

  async function join(name: string): Promise<void> {
    const res = await fixture().app.request("/api/v1/nodes/join", {
      method: "POST",
      headers: { authorization: `Bearer ${joinToken()}`, "content-type": "application/json" },
      body: JSON.stringify({ name }),
    });
    credentials.set(name, (await jsonOf<JoinResponse>(res, 201)).credential);
  }

  /** One heartbeat of `name` with `body` (a Heartbeat); answered 200. */
  async function beat(name: string, body: z.input<typeof Heartbeat>): Promise<void> {
    const res = await fixture().app.request(`/api/v1/nodes/${name}/heartbeat`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${credentials.get(name)}`,
        "content-type": "application/json",
      },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(200);
  }

  async function heartbeat(...names: string[]): Promise<void> {
    for (const name of names) await beat(name, {});
  }

  return { join, heartbeat, beat };
}
