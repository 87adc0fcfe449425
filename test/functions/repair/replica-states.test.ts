/**
 * Every pair of replica states, allowed and refused. The allowed moves are
 * written out here a second time, from the design (replicas-design.md,
 * "Replica states"), independently of the table, so a change to the table
 * must be made on purpose in both places. `movedReplica`, which every
 * change of a replica's state goes through, is checked against the same
 * list.
 */
import { describe, expect, it } from "vitest";
import { REPLICA_STATES, type Replica, type ReplicaState } from "../../../contract/volume.ts";
import { movedReplica, replicaStates } from "../../../functions/registry/replica-states.ts";
import { TransitionRefused } from "../../../functions/registry/state-machine.ts";

const ALLOWED = new Set([
  "CREATING -> ONLINE",
  "CREATING -> REBUILDING",
  "CREATING -> RETIRING",
  "ONLINE -> OFFLINE",
  "ONLINE -> RETIRING",
  "OFFLINE -> RESYNCING",
  "OFFLINE -> RETIRING",
  "RESYNCING -> ONLINE",
  "RESYNCING -> OFFLINE",
  "RESYNCING -> RETIRING",
  "REBUILDING -> ONLINE",
  "REBUILDING -> OFFLINE",
  "REBUILDING -> RETIRING",
]);

const pairs = REPLICA_STATES.flatMap((from) =>
  REPLICA_STATES.filter((to) => to !== from).map((to) => [from, to] as const),
);
const allowed = pairs.filter(([f, t]) => ALLOWED.has(`${f} -> ${t}`));
const refused = pairs.filter(([f, t]) => !ALLOWED.has(`${f} -> ${t}`));

const AT = new Date(Date.UTC(2025, 0, 2));
const replicaIn = (state: ReplicaState): Replica => ({
  id: "0123456789ab",
  pool: "pa",
  uri: "http://127.0.0.1:10000/devstoreaccount1/pa-disks/v/0123456789ab",
  state,
  since: new Date(Date.UTC(2025, 0, 1)).toISOString(),
  progress: 40,
  message: "resync: 40%",
});

describe("replica transitions", () => {
  it("cover all 30 ordered pairs of the six states", () => {
    expect(REPLICA_STATES).toHaveLength(6);
    expect(allowed).toHaveLength(13);
    expect(refused).toHaveLength(17);
  });

  it.each(allowed)("allow %s -> %s, and movedReplica makes it", (from, to) => {
    expect(replicaStates.allows(from, to)).toBe(true);
    expect(() => replicaStates.check(from, to)).not.toThrow();
    const moved = movedReplica(replicaIn(from), to, AT, "why");
    // The copy's progress belongs to the state left; the message is the move's own.
    expect(moved).toEqual({
      id: "0123456789ab",
      pool: "pa",
      uri: replicaIn(from).uri,
      state: to,
      since: AT.toISOString(),
      message: "why",
    });
  });

  it.each(refused)("refuse %s -> %s, and movedReplica throws", (from, to) => {
    expect(replicaStates.allows(from, to)).toBe(false);
    expect(() => replicaStates.check(from, to)).toThrow(TransitionRefused);
    const err = (() => {
      try {
        movedReplica(replicaIn(from), to, AT);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(TransitionRefused);
    expect(err).toMatchObject({ machine: "replica", from, to });
  });

  it("list no transition outside those, nor to the same state; RETIRING leads nowhere", () => {
    const listed = Object.entries<readonly string[]>(replicaStates.transitions).flatMap(
      ([f, tos]) => tos.map((t) => `${f} -> ${t}`),
    );
    expect(listed.sort()).toEqual([...ALLOWED].sort());
    expect(replicaStates.transitions.RETIRING).toEqual([]);
  });

  it("movedReplica without a message leaves none, and cuts a long one to 1024 characters", () => {
    expect(movedReplica(replicaIn("ONLINE"), "OFFLINE", AT).message).toBeUndefined();
    expect(movedReplica(replicaIn("ONLINE"), "OFFLINE", AT, "x".repeat(2000)).message).toHaveLength(
      1024,
    );
  });
});
