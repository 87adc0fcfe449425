/**
 * Binding a `net.Server` (the NBD server, the status API's HTTP server) to
 * a TCP address or a unix socket path, as a promise.
 *
 * A unix socket file outlives the process that made it when that process
 * is killed; the next agent must be able to take the path over, but never
 * from a file that is not a socket nor from a process still listening there.
 * Both servers follow that one rule, so it is written once, here.
 */
import { lstat, unlink } from "node:fs/promises";
import { connect, type Server } from "node:net";

/** Why a unix socket path could not be taken over. */
export type SocketPathTakenReason = "not-a-socket" | "listening";

/**
 * The path is held: by a file that is not a socket, or by a socket another
 * process answers on. Left as it was. `code` is EADDRINUSE, as the failed
 * `listen()` said.
 */
export class SocketPathTaken extends Error {
  readonly code = "EADDRINUSE";
  readonly path: string;
  readonly reason: SocketPathTakenReason;

  constructor(path: string, reason: SocketPathTakenReason) {
    super(
      reason === "not-a-socket"
        ? `the file exists and is not a socket (EADDRINUSE ${path})`
        : `another process is listening there (EADDRINUSE ${path})`,
    );
    this.name = "SocketPathTaken";
    this.path = path;
    this.reason = reason;
  }
}

/** `server.listen(options)`, resolved once listening, rejected with the bind error. */
export function listenOnce(
  server: Server,
  options: { host: string; port: number } | { path: string },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.listen(options, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

/**
 * Listen on a unix socket path, replacing a stale socket file left by a
 * process that died (one nobody answers on). Rejects with `SocketPathTaken`
 * when the path is a live socket or not a socket at all, with the bind
 * error for anything else.
 */
export async function listenUnix(server: Server, path: string): Promise<void> {
  try {
    await listenOnce(server, { path });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    if (!(await lstat(path)).isSocket()) throw new SocketPathTaken(path, "not-a-socket");
    if (await isAnswering(path)) throw new SocketPathTaken(path, "listening");
    await unlink(path);
    await listenOnce(server, { path });
  }
}

function isAnswering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect({ path });
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}
