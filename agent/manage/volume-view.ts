/**
 * How volumes look in a terminal: one table row each in lists, fields and a
 * replica table in `volume show` (each replica's state, since when, copy
 * progress, the replica it replaces and what is happening to it).
 */
import type { Volume } from "../../contract/volume.ts";
import { formatBytes, formatList, formatTime, print, printFields, printTable } from "./output.ts";
import {
  formatProgress,
  formatReplicaCount,
  formatReplicaHealth,
  summarizeReplicas,
} from "./replica-summary.ts";

/** `volume list` */
export function printVolumeTable(items: Volume[]): void {
  printTable(
    ["name", "size", "replicas", "state", "node", "epoch", "failover", "created"],
    items.map((v) => [
      v.name,
      formatBytes(v.spec.sizeBytes),
      formatReplicaCount(summarizeReplicas(v)),
      v.status.state,
      v.status.ownerNode ?? "-",
      String(v.status.epoch),
      v.spec.failover,
      formatTime(v.createdAt),
    ]),
    "no volumes",
  );
}

/** `volume show`, `volume create`, `volume update` */
export function printVolume(v: Volume): void {
  printFields([
    ["name", v.name],
    ["size", `${formatBytes(v.spec.sizeBytes)} (${v.spec.sizeBytes} bytes)`],
    ["state", v.status.state],
    ["node", v.status.ownerNode ?? "-"],
    ["epoch", String(v.status.epoch)],
    ["replicas", formatReplicaHealth(summarizeReplicas(v))],
    ["pools", formatList(v.spec.pools)],
    ["required nodes", formatList(v.spec.requiredNodes)],
    ["preferred nodes", formatList(v.spec.preferredNodes)],
    ["failover", v.spec.failover],
    ["created", formatTime(v.createdAt)],
    ["updated", formatTime(v.updatedAt)],
  ]);
  if (v.status.replicas.length === 0) return;
  print("");
  // The blob URI is left to --json: it would make every row too wide to read.
  printTable(
    ["replica", "pool", "state", "since", "progress", "replaces", "message"],
    v.status.replicas.map((r) => [
      r.id,
      r.pool,
      r.state,
      formatTime(r.since),
      formatProgress(r),
      r.replaces ?? "-",
      r.message ?? "",
    ]),
    "",
  );
}
