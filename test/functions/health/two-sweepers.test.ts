/**
 * Two sweepers at once, as two Functions instances can run the timer
 * during a deploy: each over its own control plane object on the same
 * registry and clock. A node that goes silent is judged by both; the
 * conditional writes decide, so it goes SUSPECT once, LOST once, and its
 * volume is fenced once and failed over once, to one node, at one epoch.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import type { SweepReport } from "../../../functions/health/sweep.ts";
import { listEvents } from "../../../functions/registry/events.ts";
import { agentNodes, aheadOfRealTime, NOTHING_SWEPT, STEPPED_POLICY, sweepOnFakeClock } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

const POLICY = STEPPED_POLICY;
let fx: ControlPlaneFixture;
let nowMs = aheadOfRealTime();
let token: IssuedToken;
const { join, heartbeat } = agentNodes(
  () => fx,
  () => token.token,
  () => new Date(nowMs),
);
const reported: unknown[] = [];

/** One sweeper instance: its own control plane object, the shared registry and clock. */
function sweeper(): Promise<SweepReport> {
  const cp = controlPlane({
    registry: fx.registry,
    now: () => new Date(nowMs),
    report: (e) => reported.push(e),
  });
  return sweepOnFakeClock(
    cp,
    (ms) => (nowMs += ms),
    () => heartbeat("witness", "target"),
    POLICY,
  );
}

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs) });
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  for (const name of ["witness", "target", "doomed"]) await join(name);
  await heartbeat("witness", "target", "doomed");
  await jsonOf(
    await fx.call("POST", "/api/v1/volumes", {
      name: "v",
      sizeBytes: 64 * 1024,
      requiredNodes: ["doomed", "target"],
    }),
    201,
  );
  await jsonOf(await fx.call("POST", "/api/v1/volumes/v/attach", { node: "doomed" }), 200);
  await Promise.all([sweeper(), sweeper()]);
});
afterAll(() => fx?.dispose());

describe("two sweepers at once", () => {
  it("judge a silent node once and fail its volume over once", async () => {
    // doomed stops; the others beat on, past suspectAfter but short of lostAfter: both
    // sweepers find it SUSPECT, both take their second look, both find it LOST.
    nowMs += 20_000;
    await heartbeat("witness", "target");
    const [one, two] = await Promise.all([sweeper(), sweeper()]);
    const all = (key: keyof SweepReport) => [...(one[key] as string[]), ...(two[key] as string[])];
    expect(all("suspect")).toEqual(["doomed"]);
    expect(all("lost")).toEqual(["doomed"]);
    expect(all("fenced")).toEqual(["v"]);
    expect(all("failedOver")).toEqual(["v"]);

    const v = await jsonOf<Volume>(await fx.call("GET", "/api/v1/volumes/v"), 200);
    // Attached at 1, fenced at 2, attached to target at 3: no second fence or claim.
    expect(v.status).toMatchObject({ state: "ATTACHED", ownerNode: "target", epoch: 3 });
    const count = async (type: string) =>
      (await listEvents(fx.registry, { type }, { limit: 50 }, { now: new Date(nowMs), retentionDays: 30 })).items.length;
    expect(await count("node-suspect")).toBe(1);
    expect(await count("node-lost")).toBe(1);
    expect(await count("volume-fenced")).toBe(1);
    expect(await count("volume-failed-over")).toBe(1);
    expect(reported).toEqual([]);
  });

  it("find nothing to do on their next passes, both at once", async () => {
    await heartbeat("witness", "target");
    const [one, two] = await Promise.all([sweeper(), sweeper()]);
    expect(one).toEqual(NOTHING_SWEPT);
    expect(two).toEqual(NOTHING_SWEPT);
  });
});
