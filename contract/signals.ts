/**
 * Words the agent and the control plane both act on. Kept free of zod (the
 * rest of contract/ uses it for schemas), so that the agent bundle, which
 * needs only these values, does not carry it.
 */

/**
 * How the message of a replica taken OFFLINE because its writer stopped
 * uncleanly starts (a lost node, or an agent killed while writing): writes
 * in flight may have reached some replicas only, so it is resynced in full
 * from the one kept, at once, and its pool is not blamed. Words for people:
 * what the code acts on is the `stale` flag beside them (ReplicaReport,
 * Replica, the `replica-offline` event's data).
 */
export const WRITER_LOST = "its writer was lost";

/**
 * Reported by an agent whose volume failed (its lease taken away) while
 * writes were in flight that reached some replicas only; `data.epoch` is the
 * attachment's. The control plane has the replicas copied from one.
 */
export const REPLICAS_DIVERGED = "replicas-diverged";
