/**
 * A network partition between agents and the control plane's API: a plain
 * TCP proxy the agents are pointed at (`--control-plane <origin>`) that
 * forwards to the API until `cut()`, and again after `restore()`. Cutting
 * destroys every connection in both directions, a request in flight
 * included, and drops each new connection as soon as it is accepted. The
 * agents' traffic to storage (page blobs, and their heartbeats to the
 * liveness table) does not pass here: a cut agent keeps serving its
 * volumes, as a VM does whose link to the API alone is down.
 *
 *   const link = await startPartition(controlPlanePort);
 *   const agent = await startAgent(["--control-plane", link.origin, ...]);
 *   link.cut();
 *   ...
 *   await link.close();
 */
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";

export interface Partition {
  /** `http://127.0.0.1:PORT`, to give the agent as its control plane. */
  readonly origin: string;
  /** When `cut()` was called (ms since the epoch), undefined before it and after `restore()`. */
  readonly cutAt: number | undefined;
  /** Stop forwarding: every connection is closed now and every new one refused. */
  cut(): void;
  /** Forward again. */
  restore(): void;
  close(): Promise<void>;
}

const HOST = "127.0.0.1";

/** Start forwarding 127.0.0.1:<random port> to 127.0.0.1:`targetPort`. */
export async function startPartition(targetPort: number): Promise<Partition> {
  const open = new Set<Socket>();
  let cutAt: number | undefined;
  const track = (s: Socket) => {
    open.add(s);
    s.once("close", () => open.delete(s));
    // A peer going away mid-stream is what a partition looks like; not a test error.
    s.on("error", () => {});
  };

  const server = createServer((client) => {
    track(client);
    if (cutAt !== undefined) return void client.destroy();
    const upstream = connect({ host: HOST, port: targetPort });
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.once("close", () => upstream.destroy());
    upstream.once("close", () => client.destroy());
  });
  server.listen(0, HOST);
  await once(server, "listening");
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("partition proxy has no port");

  return {
    origin: `http://${HOST}:${addr.port}`,
    get cutAt() {
      return cutAt;
    },
    cut() {
      cutAt ??= Date.now();
      for (const s of open) s.destroy();
    },
    restore() {
      cutAt = undefined;
    },
    async close() {
      for (const s of open) s.destroy();
      server.close();
      await once(server, "close");
    },
  };
}
