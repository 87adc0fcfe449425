/**
 * What the sweeper remembers from one pass to the next: when it last ran,
 * since when the heartbeats' path is known to work (health/liveness-judge.ts),
 * how far the agents' SAS policy reaches, when it last dropped event
 * tables past their retention, and whether the owner index is complete. One row, written once a pass
 * and conditionally: two sweepers running at once (two Functions instances
 * during a deploy) both judge, the node writes decide who acts, and only
 * one of them records the pass.
 */
import { readRow, replaceRow, insertRow, type Read } from "./rows.ts";
import type { Registry } from "./tables.ts";

const PARTITION = "sweeper";
const ROW = "state";

export interface SweeperState {
  lastPassAt: string | null;
  pathSince: string | null;
  /** The `agents` policy's expiry as last set. */
  policyExpiresAt: string | null;
  /** When event tables past their retention were last dropped (registry/event-retention.ts). */
  eventsPrunedAt: string | null;
  /** When a pass found the owner index complete (owners.ts); null before. */
  ownersIndexedAt: string | null;
}

export const NO_SWEEPER_STATE: SweeperState = {
  lastPassAt: null,
  pathSince: null,
  policyExpiresAt: null,
  eventsPrunedAt: null,
  ownersIndexedAt: null,
};

export async function readSweeperState(
  registry: Registry,
): Promise<Read<SweeperState> | undefined> {
  const row = await readRow(registry.control, PARTITION, ROW);
  if (!row) return undefined;
  const text = (v: unknown) => (typeof v === "string" && v !== "" ? v : null);
  return {
    value: {
      lastPassAt: text(row.value.lastPassAt),
      pathSince: text(row.value.pathSince),
      policyExpiresAt: text(row.value.policyExpiresAt),
      eventsPrunedAt: text(row.value.eventsPrunedAt),
      ownersIndexedAt: text(row.value.ownersIndexedAt),
    },
    etag: row.etag,
  };
}

/**
 * Record `state` if the row is still as read (`etag`), or create it when
 * there was none. `RegistryError("Conflict" | "Exists")` when another
 * sweeper wrote first.
 */
export async function writeSweeperState(
  registry: Registry,
  state: SweeperState,
  etag: string | undefined,
): Promise<void> {
  const row = {
    partitionKey: PARTITION,
    rowKey: ROW,
    lastPassAt: state.lastPassAt ?? "",
    pathSince: state.pathSince ?? "",
    policyExpiresAt: state.policyExpiresAt ?? "",
    eventsPrunedAt: state.eventsPrunedAt ?? "",
    ownersIndexedAt: state.ownersIndexedAt ?? "",
  };
  if (etag === undefined) await insertRow(registry.control, row);
  else await replaceRow(registry.control, row, etag);
}
