/**
 * Replica states (contract/volume.ts describes each). Every change of a
 * replica's state goes through this table:
 *
 *   CREATING   -> ONLINE (volume creation) | REBUILDING (blob made for a new replica) | RETIRING
 *   ONLINE     -> OFFLINE (its writer took it out) | RETIRING
 *   OFFLINE    -> RESYNCING (its pool answers again) | RETIRING
 *   RESYNCING  -> ONLINE (copy done) | OFFLINE (copy failed) | RETIRING
 *   REBUILDING -> ONLINE (copy done) | OFFLINE (copy failed) | RETIRING
 *   RETIRING   -> (dropped from the record once its blob is deleted or its pool stays unreachable)
 */
import type { Replica, ReplicaState } from "../../contract/volume.ts";
import { stateMachine } from "./state-machine.ts";

export const replicaStates = stateMachine<ReplicaState>("replica", {
  CREATING: ["ONLINE", "REBUILDING", "RETIRING"],
  ONLINE: ["OFFLINE", "RETIRING"],
  OFFLINE: ["RESYNCING", "RETIRING"],
  RESYNCING: ["ONLINE", "OFFLINE", "RETIRING"],
  REBUILDING: ["ONLINE", "OFFLINE", "RETIRING"],
  RETIRING: [],
});

/**
 * `replica` moved to `state` at `at` (checked against the table), with
 * `message` as the why, or none. Copy progress, a server-side copy's id
 * and the stale mark belong to the state they were set in and are dropped
 * on every move.
 */
export function movedReplica(
  replica: Replica,
  state: ReplicaState,
  at: Date,
  message?: string,
): Replica {
  replicaStates.check(replica.state, state);
  const { progress: _progress, message: _message, copyId: _copyId, stale: _stale, ...rest } = replica;
  return {
    ...rest,
    state,
    since: at.toISOString(),
    ...(message === undefined ? {} : { message: message.slice(0, 1024) }),
  };
}
