/**
 * Parsing of `pagedisk serve` arguments: sizes, listen addresses, targets.
 * Each parser throws `UsageError` with a message meant for the user.
 */

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

/** The largest page blob Azure allows. */
export const MAX_VOLUME_SIZE = 8 * 1024 ** 4;

/**
 * "8GiB", "512M", "1048576" -> bytes. Units are binary (K = KiB); the result
 * must be a positive multiple of 512 bytes no larger than 8 TiB.
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new UsageError(`invalid size "${text}" (examples: 8GiB, 512MiB, 1048576)`);
  }
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`invalid size "${text}": must be a positive whole number of bytes`);
  }
  if (bytes % 512 !== 0) {
    throw new UsageError(`invalid size "${text}": page blobs are a multiple of 512 bytes`);
  }
  if (bytes > MAX_VOLUME_SIZE) {
    throw new UsageError(`invalid size "${text}": page blobs are at most 8 TiB`);
  }
  return bytes;
}

export type ListenAddress = { unix: string } | { host: string; port: number };

/** "unix:/run/x.sock" or "tcp:127.0.0.1:10809" / "tcp:[::1]:10809". */
export function parseListen(text: string): ListenAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    if (!path) throw new UsageError(`invalid --listen "${text}": missing socket path`);
    return { unix: path };
  }
  if (text.startsWith("tcp:")) {
    const m = /^tcp:(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
    const port = m ? Number(m[3]) : Number.NaN;
    if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new UsageError(`invalid --listen "${text}" (expected tcp:HOST:PORT)`);
    }
    return { host: (m[1] ?? m[2])!, port };
  }
  throw new UsageError(`invalid --listen "${text}" (expected unix:PATH or tcp:HOST:PORT)`);
}

export type Target = { kind: "memory"; size: number } | { kind: "blob"; url: URL };

/** `memory:<size>` or an http(s) page blob URL (optionally carrying a SAS). */
export function parseTarget(text: string): Target {
  if (text.startsWith("memory:")) return { kind: "memory", size: parseSize(text.slice(7)) };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`invalid target "${text}": expected a blob URL or memory:<size>`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new UsageError(`invalid target "${text}": blob URLs are http(s)`);
  }
  return { kind: "blob", url };
}

export type LeaseMode = { mode: "auto" } | { mode: "none" } | { mode: "given"; leaseId: string };

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `auto` (take an infinite lease, release on exit), `none`, or a lease id (GUID). */
export function parseLease(text: string): LeaseMode {
  if (text === "auto") return { mode: "auto" };
  if (text === "none") return { mode: "none" };
  if (GUID.test(text)) return { mode: "given", leaseId: text.toLowerCase() };
  throw new UsageError(`invalid --lease "${text}" (expected auto, none or a lease id GUID)`);
}

/** How a client reaches the export, as an NBD URI (nbdinfo, nbdcopy, qemu accept it). */
export function nbdUri(addr: ListenAddress, exportName: string): string {
  const name = encodeURIComponent(exportName);
  if ("unix" in addr) return `nbd+unix:///${name}?socket=${encodeURIComponent(addr.unix).replace(/%2F/g, "/")}`;
  const host = addr.host.includes(":") ? `[${addr.host}]` : addr.host;
  return `nbd://${host}:${addr.port}/${name}`;
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** "3s", "500ms", "2m", "1h", "7d" or a bare number of seconds -> milliseconds. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) throw new UsageError(`invalid duration "${text}" (examples: 3s, 500ms, 2m)`);
  const ms = Number(m[1]) * DURATION_UNITS[m[2] ?? "s"]!;
  if (!Number.isFinite(ms)) throw new UsageError(`invalid duration "${text}"`);
  return Math.round(ms);
}
