/**
 * Failover within 15 s of a node's last heartbeat, with the defaults: agents
 * beat every 2 s, the sweep runs every 2 s (timer schedule in Azure, interval
 * locally), and the default policy makes a silent node LOST after 10 s. The
 * sweeps are driven on the app's clock, 2 s apart as the timer fires them,
 * over Azurite; the surviving node heartbeats between them as its agent would.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { DEFAULT_REPAIR_POLICY } from "../../../functions/health/repair-policy.ts";
import { DEFAULT_SWEEP_POLICY, sweep } from "../../../functions/health/sweep.ts";
import { LOCAL_SWEEP_INTERVAL_MS } from "../../../functions/local.ts";
import { settingsFrom } from "../../../functions/settings.ts";
import { agentNodes } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

const PROMISED_MS = 15_000;
const HEARTBEAT_MS = 2_000;

let fx: ControlPlaneFixture;
let nowMs = Date.now();
let token: IssuedToken;
const reported: unknown[] = [];
const { join, heartbeat } = agentNodes(
  () => fx,
  () => token.token,
);

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs) });
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
});
afterAll(() => fx?.dispose());

describe("default health settings", () => {
  it("are 6 s to SUSPECT and 10 s to LOST, sweeping every 2 s, and stay configurable", () => {
    const base = { PAGEDISK_REGISTRY_CONNECTION_STRING: "UseDevelopmentStorage=true" };
    expect(DEFAULT_SWEEP_POLICY).toEqual({ suspectAfterMs: 6_000, lostAfterMs: 10_000 });
    expect(settingsFrom(base).sweep).toEqual({
      ...DEFAULT_SWEEP_POLICY,
      repair: DEFAULT_REPAIR_POLICY,
    });
    expect(LOCAL_SWEEP_INTERVAL_MS).toBe(2_000);
    // Judged LOST at the first sweep past lostAfter: at most one interval late.
    expect(DEFAULT_SWEEP_POLICY.lostAfterMs + LOCAL_SWEEP_INTERVAL_MS).toBeLessThan(PROMISED_MS);
    expect(
      settingsFrom({
        ...base,
        PAGEDISK_SUSPECT_AFTER_SECONDS: "15",
        PAGEDISK_LOST_AFTER_SECONDS: "45",
      }).sweep,
    ).toMatchObject({ suspectAfterMs: 15_000, lostAfterMs: 45_000 });
  });

  it("fail a dead node's volume over within 15 s of its last heartbeat", async () => {
    await join("dead");
    await join("alive");
    const created = await fx.call("POST", "/api/v1/volumes", {
      name: "v-15s",
      sizeBytes: 64 * 1024,
    });
    expect(created.status).toBe(201);
    expect((await fx.call("POST", "/api/v1/volumes/v-15s/attach", { node: "dead" })).status).toBe(
      200,
    );
    await heartbeat("dead", "alive");
    const lastBeat = nowMs;

    const cp = controlPlane({
      registry: fx.registry,
      now: () => new Date(nowMs),
      report: (e) => reported.push(e),
    });
    let failedOverAt: number | undefined;
    while (failedOverAt === undefined && nowMs - lastBeat < PROMISED_MS) {
      nowMs += HEARTBEAT_MS;
      await heartbeat("alive");
      const report = await sweep(cp, DEFAULT_SWEEP_POLICY);
      if (nowMs - lastBeat < DEFAULT_SWEEP_POLICY.lostAfterMs) {
        expect(report.lost).toEqual([]);
        expect(report.failedOver).toEqual([]);
      }
      if (report.failedOver.includes("v-15s")) failedOverAt = nowMs;
    }
    expect(failedOverAt).toBeDefined();
    expect(failedOverAt! - lastBeat).toBeLessThan(PROMISED_MS);
    const volume = await jsonOf<Volume>(await fx.call("GET", "/api/v1/volumes/v-15s"), 200);
    expect(volume.status).toMatchObject({ state: "ATTACHED", ownerNode: "alive" });
    expect(reported).toEqual([]);
  });
});
