/**
 * `PATCH /pools/{name}/annotations`: what an operator says about a pool
 * (after Dell's drive annotations), and what it sets in motion:
 *
 * - `removal: "ready"` (kept): a RELEASED pool is removed at once, one
 *   released later as soon as it is RELEASED;
 * - `health: "bad" | "suspect"` (kept): read by the pool health
 *   computation, which it overrides;
 * - `action: "remove"` (consumed): the release starts, as
 *   `POST .../release` does; `action: "add"` (consumed): a RELEASING,
 *   RELEASED or FAILED pool goes back IN_USE.
 *
 * `action` is a verb acted on by this request, so it is not stored: a
 * stored one would say nothing true once the usage moves on (the
 * `pool-annotated` event records it). `null` removes a kept annotation.
 * The annotations and the usage change are one conditional write, checked
 * whole before it: a refused request changes nothing.
 */
import type { PoolAnnotations, PoolAnnotationsPatch } from "../../contract/pool.ts";
import type { ControlPlane } from "../control-plane.ts";
import { pools, type PoolRecord } from "../registry/pools.ts";
import { retryOnConflict } from "../registry/retry.ts";
import { note } from "./note.ts";
import { advanceNow, backInUse, noteUsage, readPool, releasing } from "./release-pool.ts";

/** The pool after the annotations and their effects; usage REMOVED if it was removed. */
export async function annotatePool(
  cp: ControlPlane,
  name: string,
  patch: PoolAnnotationsPatch,
): Promise<PoolRecord> {
  const { action, ...kept } = patch;
  const written = await retryOnConflict(async () => {
    const read = await readPool(cp, name);
    const before = read.value;
    const annotations = merged(before.annotations, kept);
    const moved =
      action === "remove"
        ? releasing(before, cp.now())
        : action === "add"
          ? backInUse(before, cp.now())
          : undefined;
    const next: PoolRecord = { ...(moved ?? before), annotations };
    const changed = moved !== undefined || !same(annotations, before.annotations);
    if (!changed) return { read, before, changed };
    next.updatedAt = cp.now().toISOString();
    const etag = await pools(cp.registry).replace(next, read.etag);
    return { read: { value: next, etag }, before, changed };
  });
  const { before, changed } = written;
  const after = written.read.value;
  if (changed) {
    await note(cp, {
      type: "pool-annotated",
      pool: name,
      message: `pool ${name} annotated: ${describe(patch)}`,
      data: { annotations: patch },
    });
  }
  await noteUsage(cp, before, after, `action=${action ?? "-"}`);
  const advanced = await advanceNow(cp, written.read);
  return advanced?.value ?? { ...after, usage: "REMOVED" };
}

function merged(
  current: PoolAnnotations,
  patch: Omit<PoolAnnotationsPatch, "action">,
): PoolAnnotations {
  const next: Record<string, string> = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete next[key];
    else if (value !== undefined) next[key] = value;
  }
  return next as PoolAnnotations;
}

function same(a: PoolAnnotations, b: PoolAnnotations): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof PoolAnnotations>;
  return [...keys].every((k) => a[k] === b[k]);
}

/** `removal=ready health- action=remove`, as the CLI writes it. */
function describe(patch: PoolAnnotationsPatch): string {
  return Object.entries(patch)
    .map(([key, value]) => (value === null ? `${key}-` : `${key}=${String(value)}`))
    .join(" ");
}
