/**
 * One heartbeat: a MERGE of the node's own row in the control plane's
 * liveness table, with the SAS the desired state handed over. Table
 * Storage, not the Functions API, takes it: a beat costs one storage
 * transaction and holds no execution open.
 *
 * The MERGE is conditional on the ETag of the agent's last write (or the
 * one the desired state gave). 412 means someone else wrote the row since:
 * the control plane rang it because the node's desired state changed.
 * `If-Match: *` beats whatever the row holds, for when the agent already
 * knows it must fetch its desired state.
 *
 * A server-side `timeout` shorter than the client's own means an abandoned
 * attempt cannot land after the agent has given up on it.
 */
import { timeOfTableEtag } from "../../contract/table-etag.ts";

/** What became of a beat. */
export type BeatOutcome =
  | { kind: "landed"; etag: string }
  /** 412: the row was rung; fetch the desired state. */
  | { kind: "rung" }
  /** 404: no such row (the node was removed, or its row not made yet). */
  | { kind: "gone" }
  /** 401/403: the SAS is refused (its policy was dropped or lapsed, or the key rotated). */
  | { kind: "refused"; status: number }
  /** No answer, or another status: try again at the next beat. */
  | { kind: "failed"; reason: string };

export interface BeatBody {
  /** The agent's clock, ISO. */
  at: string;
  /** Milliseconds since the previous beat that landed, by the agent's monotonic clock. */
  gap?: number;
}

/** Client-side limit of a beat: well under the 2 s between beats. */
export const BEAT_TIMEOUT_MS = 1_500;
/** What the service is told to give up after, in whole seconds. */
const SERVER_TIMEOUT_S = 1;

export async function beat(
  url: string,
  ifMatch: string,
  body: BeatBody,
  timeoutMs = BEAT_TIMEOUT_MS,
): Promise<BeatOutcome> {
  const target = new URL(url);
  target.searchParams.set("timeout", String(SERVER_TIMEOUT_S));
  let res: Response;
  try {
    res = await fetch(target, {
      method: "MERGE",
      headers: {
        "content-type": "application/json",
        accept: "application/json;odata=nometadata",
        "if-match": ifMatch,
        "x-ms-version": "2019-02-02",
        dataserviceversion: "3.0",
      },
      body: JSON.stringify({ by: "agent", ...body }),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    return { kind: "failed", reason: err instanceof Error ? err.message : String(err) };
  }
  // Nothing in the answer is needed but its status and ETag.
  await res.body?.cancel().catch(() => {});
  if (res.status === 204) {
    const etag = res.headers.get("etag");
    return etag ? { kind: "landed", etag } : { kind: "failed", reason: "204 without an ETag" };
  }
  if (res.status === 412) return { kind: "rung" };
  if (res.status === 404) return { kind: "gone" };
  if (res.status === 401 || res.status === 403) return { kind: "refused", status: res.status };
  return { kind: "failed", reason: `HTTP ${res.status}` };
}

/** The later of two ETags of one row (the service stamps each write later than the one before). */
export function newerEtag(a: string | undefined, b: string): string {
  if (a === undefined) return b;
  const ta = timeOfTableEtag(a);
  const tb = timeOfTableEtag(b);
  if (ta === undefined || tb === undefined) return b;
  // Sub-millisecond digits decide a tie.
  if (ta === tb) return a > b ? a : b;
  return ta > tb ? a : b;
}
