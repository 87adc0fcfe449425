/**
 * Where a node sends its heartbeats, handed to it with its desired state:
 * its liveness row's URL with a SAS, and the row's ETag read before the
 * rest of the answer. Any ring after that read makes the agent's first
 * conditional beat fail, so a change made while the answer was being built
 * is fetched again, never missed.
 *
 * A node registered before heartbeats went to Table Storage gets its key
 * here; a node whose row is missing (a failed create at join) gets it back.
 */
import type { LivenessTarget } from "../../contract/node.ts";
import type { ControlPlane } from "../control-plane.ts";
import {
  createLivenessRow,
  livenessRowUrl,
  newLivenessKey,
  readLivenessRow,
} from "../registry/liveness.ts";
import { type NodeRecord, nodes } from "../registry/nodes.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { restStatus } from "../rest-error.ts";

/**
 * The liveness target of `node` (as just read; it is read again only when
 * it has no key yet), with the row's key; undefined when the node is no
 * longer registered.
 */
export async function livenessTarget(
  cp: ControlPlane,
  node: NodeRecord,
): Promise<{ target: LivenessTarget; key: string } | undefined> {
  const key = await livenessKeyOf(cp, node);
  if (key === undefined) return undefined;
  const t = cp.registry.liveness;
  let etag = (await readLivenessRow(t, key))?.etag;
  if (etag === undefined) {
    try {
      etag = await createLivenessRow(t, key);
    } catch (err) {
      // Created meanwhile by a fetch racing this one.
      if (restStatus(err) !== 409) throw err;
      etag = (await readLivenessRow(t, key))?.etag;
      if (etag === undefined) throw err;
    }
  }
  return { target: { url: livenessRowUrl(t, key), etag, intervalMs: cp.heartbeatIntervalMs }, key };
}

/** `node`'s liveness key, given it now if it has none; undefined when it is no longer registered. */
export async function livenessKeyOf(cp: ControlPlane, node: NodeRecord): Promise<string | undefined> {
  return node.livenessKey ?? (await assignLivenessKey(cp, node.name));
}

async function assignLivenessKey(cp: ControlPlane, name: string): Promise<string | undefined> {
  const table = nodes(cp.registry);
  return retryOnConflict(async () => {
    const read = await table.get(name);
    if (!read) return undefined;
    if (read.value.livenessKey !== undefined) return read.value.livenessKey;
    const next: NodeRecord = { ...read.value, livenessKey: newLivenessKey() };
    try {
      await table.replace(next, read.etag);
    } catch (err) {
      if (isRegistryError(err, "Missing")) return undefined;
      throw err;
    }
    return next.livenessKey;
  });
}
