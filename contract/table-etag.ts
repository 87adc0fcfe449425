/**
 * The ETag of a Table Storage entity is the time of its last write:
 * `W/"datetime'2026-12-07T21%3A57%3A30.1405679Z'"`. The agent (which keeps the
 * newer of two ETags of its liveness row) and the control plane (which
 * compares index rows with the records they follow) both read that time.
 * Free of zod, so that the agent bundle can import it.
 */

/** The time a Table ETag stands for, in ms; undefined when it is not of that form. */
export function timeOfTableEtag(etag: string): number | undefined {
  const m = /datetime'([^']+)'/.exec(etag);
  if (!m) return undefined;
  const ms = Date.parse(decodeURIComponent(m[1]!));
  return Number.isNaN(ms) ? undefined : ms;
}
