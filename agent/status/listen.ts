/**
 * Where the status API listens: `unix:PATH` (the socket made 0600, so only
 * root reads it) or `tcp:HOST:PORT` on a loopback address only. The API has
 * no authentication and tells which volumes this node serves, so it is
 * never offered to the network; a Prometheus on another host scrapes
 * through a local forwarder (or node exporter's textfile) instead.
 */
import { lookup } from "node:dns/promises";
import { chmod } from "node:fs/promises";
import type { Server } from "node:http";
import { BlockList, isIP } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import type { Hono } from "hono";
import { listenOnce, listenUnix } from "../net/listen.ts";
import { type ListenAddress, parseListen, UsageError } from "../serve/args.ts";
import { answerClientErrors } from "./node-edge.ts";

/** A listening status API. */
export interface StatusListener {
  /** Where it listens, in the form it was given (`tcp:` with the actual port). */
  address: string;
  /** Stop accepting, end idle keep-alive connections, wait for the rest. */
  close(): Promise<void>;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");
LOOPBACK.addSubnet("::ffff:127.0.0.0", 104, "ipv6");

/**
 * Serve `app` at `listen`. Rejects with a UsageError, having bound
 * nothing, for a malformed address, a host that is not (or does not
 * resolve only to) loopback, or an address that cannot be bound.
 */
export async function listenStatus(app: Hono, listen: string): Promise<StatusListener> {
  const address = parseListen(listen);
  if (!("unix" in address)) await requireLoopback(listen, address.host);
  // Our own Request/Response objects stay the platform's: the agent's other
  // HTTP code (undici) must not see globals replaced under it.
  const server = createAdaptorServer({ fetch: app.fetch, overrideGlobalObjects: false }) as Server;
  // Refusals in the API's error shape (node-edge.ts).
  answerClientErrors(server);
  try {
    if ("unix" in address) {
      await listenUnix(server, address.unix);
      await chmod(address.unix, 0o600);
    } else {
      await listenOnce(server, { host: address.host, port: address.port });
    }
  } catch (err) {
    server.close();
    throw new UsageError(`cannot listen on ${listen}: ${(err as Error).message}`);
  }
  return {
    address: describe(server, address),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}

async function requireLoopback(listen: string, host: string): Promise<void> {
  let addresses: Array<{ address: string; family: number }>;
  try {
    addresses = isIP(host)
      ? [{ address: host, family: isIP(host) }]
      : await lookup(host, { all: true });
  } catch (err) {
    const reason = (err as Error).message;
    throw new UsageError(`cannot listen on ${listen}: ${host} does not resolve (${reason})`);
  }
  const outside = addresses.filter(
    (a) => !LOOPBACK.check(a.address, a.family === 6 ? "ipv6" : "ipv4"),
  );
  if (addresses.length === 0 || outside.length > 0) {
    const resolved =
      outside.length > 0 && !isIP(host)
        ? ` (it resolves to ${outside.map((a) => a.address).join(", ")})`
        : "";
    throw new UsageError(
      `refusing to listen on ${listen}: ${host} is not a loopback address${resolved}; ` +
        "the status API has no authentication: use 127.0.0.1, ::1 or a unix socket",
    );
  }
}

function describe(server: Server, asked: ListenAddress): string {
  if ("unix" in asked) return `unix:${asked.unix}`;
  const bound = server.address();
  if (bound === null || typeof bound === "string") return `tcp:${asked.host}:${asked.port}`;
  const host = bound.address.includes(":") ? `[${bound.address}]` : bound.address;
  return `tcp:${host}:${bound.port}`;
}
