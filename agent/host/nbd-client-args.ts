/**
 * nbd-client's command line, and what it prints, as pure functions.
 *
 * nbd-client (3.17 and later) configures the device over netlink unless
 * told `-nonetlink`; over netlink it needs no device argument (the kernel
 * picks a free /dev/nbdN and nbd-client prints "Connected /dev/nbdN"), it
 * hands every connection to the kernel and exits. With `-u` the first
 * positional argument is the unix socket path.
 *
 * Two options are newer than the nbd-client many distributions ship
 * (Debian 12 has 3.24, which has neither): `-identifier` (the kernel's
 * NBD_ATTR_BACKEND_IDENTIFIER, shown in /sys/block/nbdN/backend) and
 * `-dead-timeout` (NBD_ATTR_DEAD_CONN_TIMEOUT: how long requests wait for a
 * reconnect once every connection is dead). nbd-client has no feature
 * query, and probing by running it is unsafe (3.24's getopt_long_only reads
 * an unknown `-dead-timeout` as `-d ead-timeout`, a disconnect), so the
 * long option names are looked for in the binary itself.
 */
import type { CheckedRequest } from "./binding.ts";

/** Options of the installed nbd-client beyond those 3.24 has. */
export interface NbdClientFeatures {
  identifier: boolean;
  deadTimeout: boolean;
}

/**
 * Seconds before the kernel gives up on a request and requeues it on
 * another connection: longer than the engine's own retry deadline (120 s),
 * so that a throttled request is answered late by the volume rather than
 * failed by the kernel.
 */
export const DEFAULT_TIMEOUT_SECONDS = 180;

/** Which newer options the nbd-client binary knows, from its option table's strings. */
export function nbdClientFeatures(binary: Uint8Array): NbdClientFeatures {
  const bytes = Buffer.from(binary.buffer, binary.byteOffset, binary.byteLength);
  const has = (name: string) => bytes.includes(Buffer.from(`\0${name}\0`, "latin1"));
  return { identifier: has("identifier"), deadTimeout: has("dead-timeout") };
}

/**
 * Arguments that connect `req`'s export: on `device` when given (re-adoption
 * keeps the device path), else on whichever /dev/nbdN the kernel picks.
 */
export function nbdConnectArgs(
  req: CheckedRequest,
  features: NbdClientFeatures,
  device?: string,
): string[] {
  if (device !== undefined && nbdIndex(device) === null) {
    throw new RangeError(`not an nbd device: ${device}`);
  }
  const timeout = req.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  const args = ["-N", req.exportName, "-u", req.socketPath];
  if (device !== undefined) args.push(device);
  args.push("-b", String(req.blockSize), "-C", String(req.connections), "-t", String(timeout));
  if (features.deadTimeout) args.push("-dead-timeout", String(timeout));
  if (features.identifier) args.push("-identifier", req.identifier);
  if (req.readOnly) args.push("-R");
  return args;
}

/** Arguments that disconnect a device (over netlink, as it was connected). */
export function nbdDisconnectArgs(device: string): string[] {
  if (nbdIndex(device) === null) throw new RangeError(`not an nbd device: ${device}`);
  return ["-d", device];
}

/** The device nbd-client reports having connected, or null when it reports none. */
export function parseConnected(stdout: string): string | null {
  return /^Connected (\/dev\/nbd\d+)\s*$/m.exec(stdout)?.[1] ?? null;
}

/** N of /dev/nbdN, or null for anything else. */
export function nbdIndex(device: string): number | null {
  const match = /^\/dev\/nbd(\d+)$/.exec(device);
  return match ? Number(match[1]) : null;
}

/**
 * Whether nbd-client failed because nobody serves the export there
 * (connect refused, no socket, unknown export name) rather than for a
 * reason on the kernel side.
 */
export function isUnreachable(output: string): boolean {
  return /CONNECT failed|Socket failed|Connection refused|No such file|Server said|Unknown export|not found/i.test(
    output,
  );
}
