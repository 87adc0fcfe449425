/**
 * The control plane's own look at a pool: Get Container Properties, with a
 * short deadline, so that one dark pool cannot hold up a sweep.
 */
import { restCode, restStatus } from "../rest-error.ts";
import { type PoolLocation, poolContainer } from "../storage/pool-container.ts";

/** What a probe found: the pool answered, or why not (one line). */
export type ProbeResult = { ok: true } | { ok: false; error: string };

export async function probePoolHealth(
  pool: PoolLocation,
  timeoutMs: number,
): Promise<ProbeResult> {
  try {
    await poolContainer(pool).getProperties({ abortSignal: AbortSignal.timeout(timeoutMs) });
    return { ok: true };
  } catch (err) {
    return { ok: false, error: describe(err, timeoutMs) };
  }
}

function describe(err: unknown, timeoutMs: number): string {
  const status = restStatus(err);
  const code = restCode(err);
  if (status !== undefined) return `answered ${status}${code ? ` ${code}` : ""}`;
  if (err instanceof Error && err.name === "AbortError") return `no answer within ${timeoutMs} ms`;
  return `no answer${code ? ` (${code})` : ""}`;
}
