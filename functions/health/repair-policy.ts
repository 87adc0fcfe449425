/**
 * Thresholds of pool health and repair (DESIGN.md, "Health, repair,
 * replacement"), from settings (PAGEDISK_POOL_* in settings.ts).
 */
export interface RepairPolicy {
  /** A failure reported within this long keeps a pool SUSPECT (so no resync starts). */
  suspectWindowMs: number;
  /** Probes failing for this long make a pool BAD. */
  badAfterMs: number;
  /** An OFFLINE replica on a pool BAD for this long is rebuilt elsewhere instead of resynced. */
  permanentAfterMs: number;
  /** How long the control plane's probe of a pool may take before it counts as failed. */
  probeTimeoutMs: number;
  /**
   * A writer's report that a copy failed (RESYNCING or REBUILDING reported
   * OFFLINE) counts only from a heartbeat this long after the copy was
   * ordered: an earlier one may have been composed before the writer
   * learnt of the order, and still show the replica as it was.
   */
  reportGraceMs: number;
}

export const DEFAULT_REPAIR_POLICY: RepairPolicy = {
  suspectWindowMs: 60_000,
  badAfterMs: 30_000,
  permanentAfterMs: 300_000,
  probeTimeoutMs: 5_000,
  reportGraceMs: 5_000,
};
