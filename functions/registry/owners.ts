/**
 * Which volumes each node may own: an index of the volumes table by owner,
 * so that a node's desired state is one partition's rows (PartitionKey =
 * node, RowKey = volume) and a point read of each, not a scan of every
 * volume for those naming the node.
 *
 * The index is a superset of the truth, never less: a row is written
 * before any write that makes a node a volume's owner (the claim of an
 * attach or a failover), and deleted after the write that takes the volume
 * from the node (detach, fencing, a failover elsewhere, a rolled-back
 * attach, deletion). Readers check each volume's record, which decides.
 * A row is deleted only when it is older than the record that no longer
 * names its node, and conditionally on the row as read: a row written for
 * a claim still on its way is newer, and stays. The sweeper (once a pass,
 * with the volumes it lists anyway) adds a row missing for an owned volume
 * (a registry from before the index, a write lost to a crash) and deletes
 * the stale rows a crash left.
 *
 * Until a pass has done so once (registry/sweeper-state.ts
 * `ownersIndexedAt`), readers scan the volumes as before the index.
 */
import { odata } from "@azure/data-tables";
import { timeOfTableEtag } from "../../contract/table-etag.ts";
import { restStatus } from "../rest-error.ts";
import type { Read } from "./rows.ts";
import type { Registry } from "./tables.ts";
import { readSweeperState } from "./sweeper-state.ts";
import { type VolumeRecord, volumes } from "./volumes.ts";

/** Record that `node` may own `volume`; idempotent. */
export async function noteOwner(registry: Registry, node: string, volume: string): Promise<void> {
  await registry.owners.upsertEntity({ partitionKey: node, rowKey: volume }, "Replace");
}

/** The volumes `node` may own: one partition, paged. */
export async function ownedBy(registry: Registry, node: string): Promise<string[]> {
  const names: string[] = [];
  const rows = registry.owners.listEntities({
    queryOptions: { filter: odata`PartitionKey eq ${node}`, select: ["RowKey"] },
  });
  for await (const row of rows) names.push(String(row.rowKey));
  return names;
}

/**
 * The volumes whose record names `node` as owner, in any state: the
 * index's partition and a point read of each, or, before the index is
 * complete, a scan.
 */
export async function volumesOwnedBy(registry: Registry, node: string): Promise<Array<Read<VolumeRecord>>> {
  const table = volumes(registry);
  if (!(await indexComplete(registry))) return table.list(odata`ownerNode eq ${node}`);
  const reads = await Promise.all((await ownedBy(registry, node)).map((name) => table.get(name)));
  return reads.filter((r): r is Read<VolumeRecord> => r?.value.status.ownerNode === node);
}

/** Registries whose index a pass has found complete: once it is, it stays so. */
const complete = new WeakSet<Registry>();

/** Whether a pass has completed the index; read from the sweeper's state until it has. */
async function indexComplete(registry: Registry): Promise<boolean> {
  if (complete.has(registry)) return true;
  if (!(await readSweeperState(registry))?.value.ownersIndexedAt) return false;
  complete.add(registry);
  return true;
}

/**
 * `node` no longer owns `volume`, whose record was just written with
 * `recordEtag` naming another owner or none: delete its row if it is older
 * than that record. Best effort: a row left behind is the sweeper's.
 */
export async function forgetOwner(
  registry: Registry,
  node: string,
  volume: string,
  recordEtag: string,
): Promise<void> {
  try {
    const row = await registry.owners.getEntity(node, volume);
    await deleteIfOlder(registry, node, volume, String(row.timestamp), row.etag, writtenAt(recordEtag));
  } catch (err) {
    if (restStatus(err) !== 404) throw err;
  }
}

async function deleteIfOlder(
  registry: Registry,
  node: string,
  volume: string,
  rowTimestamp: string,
  rowEtag: string,
  recordAt: number,
): Promise<boolean> {
  // A row newer than the record may be a claim's, still to be written.
  if (!(Date.parse(rowTimestamp) < recordAt)) return false;
  try {
    await registry.owners.deleteEntity(node, volume, { etag: rowEtag });
    return true;
  } catch (err) {
    // Written again meanwhile (a claim), or gone: either way not ours to delete.
    if (restStatus(err) === 412 || restStatus(err) === 404) return false;
    throw err;
  }
}

/** What a pass did to the index. */
export interface OwnersReconciled {
  added: number;
  removed: number;
}

/**
 * Bring the index in line with `all` (every volume, as just listed): add
 * the rows owned volumes lack, delete the rows of volumes whose record,
 * written after the row, names another owner or none. One scan of the
 * index, which holds a row per owned volume and a few stale ones.
 */
export async function reconcileOwners(
  registry: Registry,
  all: ReadonlyArray<Read<VolumeRecord>>,
): Promise<OwnersReconciled> {
  const byName = new Map(all.map((r) => [r.value.name, r]));
  const indexed = new Set<string>();
  let removed = 0;
  const rows = registry.owners.listEntities<Record<string, unknown>>({
    queryOptions: { select: ["PartitionKey", "RowKey", "Timestamp"] },
  });
  for await (const row of rows) {
    const node = String(row.partitionKey);
    const name = String(row.rowKey);
    const read = byName.get(name);
    if (read?.value.status.ownerNode === node) {
      indexed.add(`${node}/${name}`);
      continue;
    }
    // A volume no longer listed (deleted) leaves rows any age: its record is gone for good.
    const recordAt = read ? writtenAt(read.etag) : Number.POSITIVE_INFINITY;
    if (await deleteIfOlder(registry, node, name, String(row.timestamp), String(row.etag), recordAt)) removed++;
  }
  let added = 0;
  for (const { value: v } of all) {
    const owner = v.status.ownerNode;
    if (owner === null || indexed.has(`${owner}/${v.name}`)) continue;
    // Read again: the volume may have left the node since it was listed, and its row with it.
    if ((await volumes(registry).get(v.name))?.value.status.ownerNode !== owner) continue;
    await noteOwner(registry, owner, v.name);
    added++;
  }
  return { added, removed };
}

/** The time a Table ETag stands for, ms; +∞ when it is not of that form. */
function writtenAt(etag: string): number {
  return timeOfTableEtag(etag) ?? Number.POSITIVE_INFINITY;
}
