/**
 * The rule a detach's wait applies to each read of the owner's row
 * (detach-drain.ts `drainState`), case by case. The API tests show the
 * wait wired to heartbeats; whether a heartbeat that must not end it
 * really does not is only certain here, where no re-read races the check.
 */
import { describe, expect, it } from "vitest";
import type { VolumeReport } from "../../../contract/node.ts";
import { drainState } from "../../../functions/arbiter/detach-drain.ts";
import type { NodeRecord } from "../../../functions/registry/nodes.ts";
import { nodeRecord } from "../node-record.ts";

/** The generation of the bump that took the volume away. */
const BUMP = 7;

const node = (extra: Partial<NodeRecord>): NodeRecord => nodeRecord("vm-1", extra);

const serving = (state: VolumeReport["state"], volume = "v"): VolumeReport => ({
  volume,
  epoch: 1,
  state,
  replicas: [],
});

describe("drainState", () => {
  it("waits until the owner has applied the bump", () => {
    const before = node({ appliedGeneration: BUMP - 1, volumes: [] });
    expect(drainState(before, "v", BUMP)).toBe("waiting");
  });

  it("waits while the owner, at the bump or later, still writes the volume", () => {
    for (const state of ["SERVING", "DEGRADED"] as const) {
      for (const applied of [BUMP, BUMP + 1]) {
        const n = node({ appliedGeneration: applied, volumes: [serving(state)] });
        expect(drainState(n, "v", BUMP)).toBe("waiting");
      }
    }
  });

  it("is drained once the applied bump leaves the volume not written: absent, STOPPED or FAILED", () => {
    for (const volumes of [[], [serving("SERVING", "other")], [serving("STOPPED")], [serving("FAILED")]]) {
      expect(drainState(node({ appliedGeneration: BUMP, volumes }), "v", BUMP)).toBe("drained");
    }
  });

  it("gives up, saying why, for an owner not READY or an agent that does not report its generation", () => {
    expect(drainState(node({ state: "SUSPECT", appliedGeneration: BUMP - 1 }), "v", BUMP)).toBe(
      "node vm-1 is SUSPECT",
    );
    expect(drainState(node({ volumes: [serving("SERVING")] }), "v", BUMP)).toBe(
      "node vm-1's agent does not report the generation it applied",
    );
  });
});
