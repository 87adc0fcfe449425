/**
 * A volume's replicas in a few words, for `volume list` and `volume show`:
 * how many are ONLINE against how many the spec asks for, and the copies
 * under way. Only ONLINE replicas hold every write, so fewer of them than
 * `spec.replicas` is "degraded": one failure closer to losing the volume.
 */
import type { Replica, Volume } from "../../contract/volume.ts";

export interface ReplicaSummary {
  online: number;
  wanted: number;
  /** Fewer ONLINE replicas than the spec asks for (never said of a volume being created or deleted). */
  degraded: boolean;
  /** One per copy under way, slowest first: `resyncing 40%`, `rebuilding 5%`. */
  copies: string[];
}

/** Volume states whose replicas are not expected ONLINE yet, or any more. */
const PASSING: ReadonlySet<string> = new Set(["CREATING", "DELETING"]);

export function summarizeReplicas(v: Volume): ReplicaSummary {
  const { replicas } = v.status;
  const online = replicas.filter((r) => r.state === "ONLINE").length;
  const copying = replicas
    .filter((r) => r.state === "RESYNCING" || r.state === "REBUILDING")
    .sort((a, b) => (a.progress ?? 0) - (b.progress ?? 0));
  return {
    online,
    wanted: v.spec.replicas,
    degraded: online < v.spec.replicas && !PASSING.has(v.status.state),
    copies: copying.map((r) => `${r.state.toLowerCase()} ${formatProgress(r)}`),
  };
}

/** The `volume list` cell: `2/2`, `1/2 (resyncing 40%)`, `1/2 (degraded)`. */
export function formatReplicaCount(s: ReplicaSummary): string {
  const count = `${s.online}/${s.wanted}`;
  if (s.copies.length > 0) return `${count} (${s.copies.join(", ")})`;
  return s.degraded ? `${count} (degraded)` : count;
}

/** The `volume show` line: `2 of 2 ONLINE`, `1 of 2 ONLINE (degraded: resyncing 40%)`. */
export function formatReplicaHealth(s: ReplicaSummary): string {
  const count = `${s.online} of ${s.wanted} ONLINE`;
  const copies = s.copies.length > 0 ? s.copies.join(", ") : "";
  if (s.degraded) return `${count} (degraded${copies ? `: ${copies}` : ""})`;
  return copies ? `${count} (${copies})` : count;
}

/**
 * Percent done of a replica's copy, whole (a copy at 99.6% is not done);
 * `-` when it is not copying, as the record drops `progress` on every move.
 */
export function formatProgress(r: Replica): string {
  if (r.state !== "RESYNCING" && r.state !== "REBUILDING") return "-";
  return `${Math.floor(r.progress ?? 0)}%`;
}
