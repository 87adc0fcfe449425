/**
 * Parsing of `pagedisk serve` arguments: sizes, listen addresses, targets,
 * NBD limits. Each parser throws `UsageError` with a message meant for the user.
 */
import { DEFAULT_BLOCK_SIZES } from "../nbd/catalog.ts";
import {
  DEFAULT_INFLIGHT_BUDGET,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_EXPORT,
  DEFAULT_MAX_INFLIGHT,
} from "../nbd/server.ts";
import { largestRequestCost } from "../nbd/transmission.ts";
import type { ServeLimits } from "./export.ts";

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

/** "256MiB", "1GiB", "1048576" -> bytes: a positive whole number, binary units. */
export function parseBytes(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Number(m[1]) * unit : Number.NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`invalid ${flag} "${text}" (examples: 256MiB, 1GiB, 1048576)`);
  }
  return bytes;
}

/** A positive whole number, such as a connection count. */
export function parseCount(text: string, flag: string): number {
  const n = /^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new UsageError(`invalid ${flag} "${text}": expected a whole number of at least 1`);
  }
  return n;
}

const mib = (bytes: number) => `${bytes / 1024 ** 2}MiB`;

/** The budget must hold the largest request an export allows, or that request would wait forever. */
function parseBudget(text: string): number {
  const bytes = parseBytes(text, "--max-inflight");
  const largest = largestRequestCost(DEFAULT_BLOCK_SIZES);
  if (bytes < largest) {
    throw new UsageError(
      `invalid --max-inflight "${text}": must be at least ${largest} bytes, ` +
        `the largest NBD request (${mib(DEFAULT_BLOCK_SIZES.maximum)}) with its overhead`,
    );
  }
  return bytes;
}

/** A `pagedisk serve` flag that bounds NBD memory or connections. */
export interface LimitFlag {
  /** Commander syntax, e.g. "--max-connections <n>". */
  flags: string;
  /** The name commander files its value under, e.g. "maxConnections". */
  attribute: string;
  /** Its line in `--help`. */
  help: string;
  /** Where the parsed value goes. */
  key: keyof ServeLimits;
  parse(text: string): number;
}

/** The `pagedisk serve` flags that bound NBD memory and connections, with their --help lines. */
export const LIMIT_FLAGS: readonly LimitFlag[] = [
  {
    flags: "--max-inflight <size>",
    attribute: "maxInflight",
    help: `bytes of requests and unsent replies all NBD clients may hold at once; more wait (default ${mib(DEFAULT_INFLIGHT_BUDGET)})`,
    key: "inflightBudget",
    parse: parseBudget,
  },
  {
    flags: "--max-inflight-per-connection <size>",
    attribute: "maxInflightPerConnection",
    help: `the same for one NBD connection (default ${mib(DEFAULT_MAX_INFLIGHT)})`,
    key: "maxInflightPerConnection",
    parse: (text) => parseBytes(text, "--max-inflight-per-connection"),
  },
  {
    flags: "--max-connections <n>",
    attribute: "maxConnections",
    help: `NBD connections open at once; more are refused (default ${DEFAULT_MAX_CONNECTIONS})`,
    key: "maxConnections",
    parse: (text) => parseCount(text, "--max-connections"),
  },
  {
    flags: "--max-connections-per-export <n>",
    attribute: "maxConnectionsPerExport",
    help: `NBD connections using the export at once; more are refused (default ${DEFAULT_MAX_CONNECTIONS_PER_EXPORT})`,
    key: "maxConnectionsPerExport",
    parse: (text) => parseCount(text, "--max-connections-per-export"),
  },
];

/** The limits given as parsed flags (commander's camel-cased option values), by `LIMIT_FLAGS`. */
export function limitsFromFlags(values: Record<string, unknown>): ServeLimits {
  const limits: ServeLimits = {};
  for (const flag of LIMIT_FLAGS) {
    const value = values[flag.attribute];
    if (typeof value === "number") limits[flag.key] = value;
  }
  return limits;
}
