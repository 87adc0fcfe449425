/**
 * A node's desired-state generation (`desiredGeneration` in its row): bumped
 * after every volume write that changes what the node must serve, i.e. a
 * volume becoming ATTACHED to it (attach, failover), leaving ATTACHED on
 * it (detach, fencing), or the replica set of one it serves changing
 * (repair: a resync or rebuild ordered, a replica retired). Agents wait on it (`GET .../desired?after=`), so a
 * change reaches them at once instead of at their next full fetch.
 *
 * The bump comes after the volume write, never before: an agent woken by it
 * must find the change already in the volume table. It is a durable step of
 * its own, so a crash can fall between the two; the volume write then
 * stands and the agent learns of it later, through its periodic full fetch
 * (every held request is answered at its timeout with the whole desired
 * state). For the same reason a bump that fails is reported, not thrown:
 * the operation it follows has happened.
 */
import type { ControlPlane } from "../control-plane.ts";
import { generationOf, nodes } from "../registry/nodes.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { desiredChanges } from "./desired-changes.ts";

/** What happened to the node's volumes; names the step for crash injection. */
export type GenerationCause = "attached" | "detached" | "fenced" | "replicas";

/**
 * Bump `node`'s generation (conditionally, retried on conflict with
 * heartbeats and the sweeper) and wake its requests waiting in this
 * process. A node no longer registered has nothing to learn. Returns the
 * new generation; undefined when there was no node or the bump failed.
 */
export async function bumpDesiredGeneration(
  cp: ControlPlane,
  node: string,
  cause: GenerationCause,
): Promise<number | undefined> {
  cp.faults?.beforeStep(`bump-generation ${cause}`);
  const table = nodes(cp.registry);
  let generation: number | undefined;
  try {
    await retryOnConflict(async () => {
      const read = await table.get(node);
      if (!read) return;
      const next = generationOf(read.value) + 1;
      await table.replace({ ...read.value, desiredGeneration: next }, read.etag);
      generation = next;
    });
  } catch (err) {
    cp.report(err);
    return undefined;
  }
  desiredChanges(cp.registry).notify(node);
  return generation;
}
