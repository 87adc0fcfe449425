/**
 * A node's desired-state generation (`desiredGeneration` in its row): bumped
 * after every volume write that changes what the node must serve, i.e. a
 * volume becoming ATTACHED to it (attach, failover), leaving ATTACHED on
 * it (detach, fencing), or the replica set of one it serves changing
 * (repair: a resync or rebuild ordered, a replica retired). Each bump rings
 * the node's liveness row (registry/liveness.ts): the agent's next heartbeat,
 * at most an interval later, fails on it and the agent fetches its desired
 * state. Nothing waits in a Functions execution for that.
 *
 * The bump and the ring come after the volume write, never before: an agent
 * sent by the ring must find the change already in the volume table. Each
 * is a durable step of its own, so a crash can fall between them; the
 * volume write then stands and the agent learns of it later, through its
 * periodic full fetch. For the same reason a bump or a ring that fails is
 * reported, not thrown: the operation it follows has happened.
 */
import type { ControlPlane } from "../control-plane.ts";
import { ringLiveness } from "../registry/liveness.ts";
import { generationOf, nodes } from "../registry/nodes.ts";
import { retryOnConflict } from "../registry/retry.ts";

/** What happened to the node's volumes; names the step for crash injection. */
export type GenerationCause = "attached" | "detached" | "fenced" | "replicas";

/**
 * Bump `node`'s generation (conditionally, retried on conflict with
 * reports and the sweeper) and ring its liveness row. A node no longer
 * registered has nothing to learn. Returns the new generation; undefined
 * when there was no node or the bump failed.
 */
export async function bumpDesiredGeneration(
  cp: ControlPlane,
  node: string,
  cause: GenerationCause,
): Promise<number | undefined> {
  cp.faults?.beforeStep(`bump-generation ${cause}`);
  const table = nodes(cp.registry);
  let generation: number | undefined;
  let livenessKey: string | undefined;
  try {
    await retryOnConflict(async () => {
      const read = await table.get(node);
      if (!read) return;
      const next = generationOf(read.value) + 1;
      await table.replace({ ...read.value, desiredGeneration: next }, read.etag);
      generation = next;
      livenessKey = read.value.livenessKey;
    });
  } catch (err) {
    cp.report(err);
    return undefined;
  }
  if (livenessKey !== undefined) {
    cp.faults?.beforeStep(`ring ${cause}`);
    await ringLiveness(cp.registry.liveness, livenessKey, cp.now().getTime()).catch(cp.report);
  }
  return generation;
}
