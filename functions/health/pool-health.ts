/**
 * Pool health (DESIGN.md, "Health, repair, replacement"), judged once per
 * sweep from the control plane's probe of each pool and the failures
 * reported against it:
 *
 * - UNKNOWN until the first probe;
 * - GOOD: the probe succeeds and no failure was reported within
 *   `suspectWindowMs`;
 * - SUSPECT: a failure was reported within the window, or the probe failed;
 * - BAD: probes have kept failing for `badAfterMs`;
 * - an operator's `health` annotation (`bad`, `suspect`) overrides all that.
 *
 * The pool row is written only when its health, the reason for it, or the
 * start of a run of failed probes changes, so a healthy cluster's sweep
 * writes nothing; each change of health is a `pool-health-changed` event.
 */
import type { PoolHealth } from "../../contract/pool.ts";
import type { ControlPlane } from "../control-plane.ts";
import { note } from "../lifecycle/note.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import type { Read } from "../registry/rows.ts";
import { type ProbeResult, probePoolHealth } from "./probe.ts";
import type { RepairPolicy } from "./repair-policy.ts";
import { failuresReportedSince, type ReportedFailure } from "./reported-failures.ts";

/** The health a pool should have now, and why. */
export interface PoolJudgement {
  health: PoolHealth;
  reason: string;
  /** First failed probe of the current run, or undefined while probes succeed. */
  unreachableSince: string | undefined;
}

/** Pure: the pool's health from what is known at `now`. */
export function judgePool(
  pool: PoolRecord,
  probe: ProbeResult,
  failure: ReportedFailure | undefined,
  now: Date,
  policy: Pick<RepairPolicy, "badAfterMs">,
): PoolJudgement {
  const unreachableSince = probe.ok ? undefined : (pool.unreachableSince ?? now.toISOString());
  const judged = ((): Omit<PoolJudgement, "unreachableSince"> => {
    if (!probe.ok) {
      const failingMs = now.getTime() - Date.parse(unreachableSince!);
      return failingMs >= policy.badAfterMs
        ? { health: "BAD", reason: `probes failing since ${unreachableSince}: ${probe.error}` }
        : { health: "SUSPECT", reason: `probe failed: ${probe.error}` };
    }
    if (failure) {
      const by = failure.node ? ` by node ${failure.node}` : "";
      return {
        health: "SUSPECT",
        reason: `${failure.type} reported${by} at ${failure.at}: ${failure.message}`,
      };
    }
    return { health: "GOOD", reason: "probes succeed and no failure was reported recently" };
  })();
  const override = pool.annotations.health;
  if (override) {
    return {
      health: override === "bad" ? "BAD" : "SUSPECT",
      reason: `annotated health=${override} (computed: ${judged.health}, ${judged.reason})`,
      unreachableSince,
    };
  }
  return { ...judged, unreachableSince };
}

/**
 * Whether a pool's replicas are to be rebuilt elsewhere rather than waited
 * for: BAD for `permanentAfterMs`, annotated `health=bad`, or being
 * released (its replicas move off it) or removed.
 */
export function isLostPool(
  pool: PoolRecord | undefined,
  now: Date,
  policy: Pick<RepairPolicy, "permanentAfterMs">,
): boolean {
  // A pool cannot be removed while it holds replicas; an unknown one has nothing to resync from.
  if (!pool) return true;
  if (pool.annotations.health === "bad") return true;
  if (pool.usage === "RELEASING" || pool.usage === "REMOVING") return true;
  if (pool.health !== "BAD" || pool.healthSince === undefined) return false;
  return now.getTime() - Date.parse(pool.healthSince) >= policy.permanentAfterMs;
}

/** The pool with `judgement` applied, or undefined when nothing changes. */
export function withJudgement(
  pool: PoolRecord,
  judgement: PoolJudgement,
  now: Date,
): PoolRecord | undefined {
  if (
    pool.health === judgement.health &&
    pool.healthReason === judgement.reason.slice(0, 1024) &&
    pool.unreachableSince === judgement.unreachableSince
  ) {
    return undefined;
  }
  const { unreachableSince: _was, ...rest } = pool;
  const changed = pool.health !== judgement.health;
  return {
    ...rest,
    health: judgement.health,
    healthReason: judgement.reason.slice(0, 1024),
    ...(changed || pool.healthSince === undefined
      ? { healthSince: now.toISOString() }
      : { healthSince: pool.healthSince }),
    ...(judgement.unreachableSince === undefined
      ? {}
      : { unreachableSince: judgement.unreachableSince }),
    updatedAt: changed ? now.toISOString() : pool.updatedAt,
  };
}

/**
 * Probe every pool (in parallel), judge and record it. Returns every pool
 * as it now stands, by name. A pool whose row changed meanwhile (an
 * annotation, a usage change) keeps its row and is judged next pass.
 */
export async function judgePools(
  cp: ControlPlane,
  policy: RepairPolicy,
): Promise<Map<string, PoolRecord>> {
  const now = cp.now();
  const [all, failures] = await Promise.all([
    pools(cp.registry).list(),
    failuresReportedSince(
      cp.registry,
      new Date(now.getTime() - policy.suspectWindowMs),
      now,
    ),
  ]);
  const judged = await Promise.all(
    all.map(async (read) => {
      const probe = await probePoolHealth(read.value, policy.probeTimeoutMs);
      return record(cp, read, judgePool(read.value, probe, failures.get(read.value.name), now, policy), now);
    }),
  );
  return new Map(judged.map((p) => [p.name, p]));
}

async function record(
  cp: ControlPlane,
  read: Read<PoolRecord>,
  judgement: PoolJudgement,
  now: Date,
): Promise<PoolRecord> {
  const before = read.value;
  const next = withJudgement(before, judgement, now);
  if (!next) return before;
  try {
    cp.faults?.beforeStep(`pool-health ${before.name}`);
    await pools(cp.registry).replace(next, read.etag);
  } catch (err) {
    // Changed meanwhile (an annotation, a usage change): judged again next pass.
    if (!isRegistryError(err, "Conflict")) cp.report(err);
    return before;
  }
  if (next.health !== before.health) {
    await note(cp, {
      type: "pool-health-changed",
      pool: before.name,
      message: `pool ${before.name} is ${next.health} (was ${before.health}): ${judgement.reason}`,
      data: { from: before.health, to: next.health, reason: judgement.reason },
    });
  }
  return next;
}
