/**
 * Every pair of states of every state machine: the allowed ones are written
 * out here a second time, independently of the tables, so a change to a
 * table must be made on purpose in both places.
 */
import { describe, expect, it } from "vitest";
import { NODE_STATES } from "../../../contract/node.ts";
import { POOL_USAGE } from "../../../contract/pool.ts";
import { VOLUME_STATES } from "../../../contract/volume.ts";
import { nodeStates } from "../../../functions/registry/node-states.ts";
import { poolUsageStates } from "../../../functions/registry/pool-usage-states.ts";
import { type StateMachine, TransitionRefused } from "../../../functions/registry/state-machine.ts";
import { volumeStates } from "../../../functions/registry/volume-states.ts";

function everyPair<S extends string>(
  machine: StateMachine<S>,
  states: readonly S[],
  allowed: readonly string[],
): void {
  const expected = new Set(allowed);
  const pairs = states.flatMap((from) =>
    states.filter((to) => to !== from).map((to) => [from, to] as const),
  );
  describe(`${machine.name} transitions`, () => {
    it.each(pairs.filter(([f, t]) => expected.has(`${f} -> ${t}`)))(
      "allows %s -> %s",
      (from, to) => {
        expect(machine.allows(from, to)).toBe(true);
        expect(() => machine.check(from, to)).not.toThrow();
      },
    );
    it.each(pairs.filter(([f, t]) => !expected.has(`${f} -> ${t}`)))(
      "refuses %s -> %s",
      (from, to) => {
        expect(machine.allows(from, to)).toBe(false);
        expect(() => machine.check(from, to)).toThrow(TransitionRefused);
      },
    );
    it("lists no transition outside the expected ones, nor to the same state", () => {
      const listed = Object.entries<readonly S[]>(machine.transitions).flatMap(([f, tos]) =>
        tos.map((t) => `${f} -> ${t}`),
      );
      expect(listed.sort()).toEqual([...expected].sort());
    });
  });
}

everyPair(volumeStates, VOLUME_STATES, [
  "CREATING -> DETACHED",
  "CREATING -> DELETING",
  "DETACHED -> ATTACHING",
  "DETACHED -> DELETING",
  "ATTACHING -> ATTACHED",
  "ATTACHING -> DETACHED",
  "ATTACHING -> DELETING",
  "ATTACHED -> DETACHING",
  "ATTACHED -> FENCING",
  "ATTACHED -> DELETING",
  "DETACHING -> DETACHED",
  "DETACHING -> DELETING",
  "FENCING -> ATTACHING",
  "FENCING -> DETACHED",
  "FENCING -> DELETING",
]);

everyPair(nodeStates, NODE_STATES, [
  "READY -> SUSPECT",
  "SUSPECT -> READY",
  "SUSPECT -> LOST",
  "LOST -> READY",
]);

everyPair(poolUsageStates, POOL_USAGE, [
  "IN_USE -> RELEASING",
  "IN_USE -> REMOVING",
  "RELEASING -> RELEASED",
  "RELEASING -> FAILED",
  "RELEASING -> IN_USE",
  "RELEASED -> REMOVING",
  "RELEASED -> IN_USE",
  "REMOVING -> REMOVED",
  "REMOVING -> IN_USE",
  "REMOVING -> RELEASED",
  "FAILED -> IN_USE",
  "FAILED -> RELEASING",
]);

describe("TransitionRefused", () => {
  it("says which machine refused what", () => {
    const err = (() => {
      try {
        volumeStates.check("DELETING", "ATTACHING");
      } catch (e) {
        return e;
      }
    })() as TransitionRefused;
    expect(err).toBeInstanceOf(TransitionRefused);
    expect([err.machine, err.from, err.to]).toEqual(["volume", "DELETING", "ATTACHING"]);
  });
});
