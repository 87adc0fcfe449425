/**
 * The status API on a real listener: a 0600 unix socket answered over the
 * socket, loopback TCP, and refusals that bind nothing.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { request } from "node:http";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { openVolume, type Volume } from "../../agent/engine/volume.ts";
import { UsageError } from "../../agent/serve/args.ts";
import { statusApp } from "../../agent/status/app.ts";
import { listenStatus, type StatusListener } from "../../agent/status/listen.ts";
import type { StatusSource } from "../../agent/status/source.ts";

interface Got {
  status: number;
  body: string;
}

/** One GET over a unix socket or TCP with node:http (no keep-alive). */
function get(target: { socketPath: string } | { host: string; port: number }, path: string) {
  return new Promise<Got>((resolve, reject) => {
    const req = request({ ...target, path, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("listenStatus", () => {
  let dir: string;
  let volume: Volume;
  let source: StatusSource;
  let listener: StatusListener | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "pagedisk-status-"));
    volume = await openVolume(new MemoryBackend({ size: 1024 * 1024 }));
    source = {
      node: () => ({
        name: "node-a",
        version: "0.1.0",
        controlPlane: "",
        connected: false,
        lastHeartbeatAt: null,
      }),
      volumes: () => [
        {
          name: "vol1",
          epoch: 1,
          state: "SERVING",
          sizeBytes: volume.size,
          socket: join(dir, "vol1.sock"),
          device: null,
          metrics: () => volume.metrics(),
        },
      ],
    };
  });

  afterEach(async () => {
    await listener?.close();
    listener = undefined;
    await volume.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves on a unix socket that only its owner may open, answered over the socket", async () => {
    const path = join(dir, "status.sock");
    listener = await listenStatus(statusApp(source), `unix:${path}`);
    expect(listener.address).toBe(`unix:${path}`);
    const info = await stat(path);
    expect(info.isSocket()).toBe(true);
    expect(info.mode & 0o777).toBe(0o600);

    await volume.write(0, new Uint8Array(4096).fill(7));
    const volumes = await get({ socketPath: path }, "/volumes");
    expect(volumes.status).toBe(200);
    expect(JSON.parse(volumes.body)).toMatchObject({
      items: [{ name: "vol1", io: { writeOps: 1 } }],
    });
    const health = await get({ socketPath: path }, "/healthz");
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok", problems: [] });
    const metrics = await get({ socketPath: path }, "/metrics");
    expect(metrics.body).toMatch(/^pagedisk_requests_total\{op="write",volume="vol1"\} 1$/m);

    await listener.close();
    listener = undefined;
    await expect(get({ socketPath: path }, "/healthz")).rejects.toThrow();
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
  });

  it("takes over a socket file left behind by an agent that was killed", async () => {
    const path = join(dir, "status.sock");
    // A clean close unlinks the socket; SIGKILL leaves it, as a crash does.
    const script = `require("node:net").createServer().listen(process.argv[1], () => console.log("up"))`;
    const child = spawn(process.execPath, ["-e", script, path], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = once(child, "exit");
    await once(createInterface({ input: child.stdout! }), "line");
    child.kill("SIGKILL");
    await exited;
    expect((await stat(path)).isSocket()).toBe(true);

    listener = await listenStatus(statusApp(source), `unix:${path}`);
    expect((await get({ socketPath: path }, "/healthz")).status).toBe(200);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it("refuses a unix path held by a live listener or a regular file, leaving both", async () => {
    const live = join(dir, "live.sock");
    const other = createServer();
    await new Promise<void>((resolve) => other.listen(live, resolve));
    try {
      await expect(listenStatus(statusApp(source), `unix:${live}`)).rejects.toThrow(
        /another process is listening/,
      );
      expect((await stat(live)).isSocket()).toBe(true);
    } finally {
      await new Promise<void>((resolve) => other.close(() => resolve()));
    }

    const file = join(dir, "notes.txt");
    await writeFile(file, "keep me");
    const err = await listenStatus(statusApp(source), `unix:${file}`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/not a socket/);
    expect(await readFile(file, "utf8")).toBe("keep me");
  });

  it("serves on loopback TCP and reports the port it got", async () => {
    listener = await listenStatus(statusApp(source), "tcp:127.0.0.1:0");
    const m = /^tcp:127\.0\.0\.1:(\d+)$/.exec(listener.address);
    expect(m).not.toBeNull();
    const port = Number(m![1]);
    expect(port).toBeGreaterThan(0);
    const res = await get({ host: "127.0.0.1", port }, "/nope");
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: "NotFound" } });
  });

  it("refuses a loopback port that is taken, with the reason", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as { port: number };
    try {
      const err = await listenStatus(statusApp(source), `tcp:127.0.0.1:${port}`).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(/cannot listen on tcp:127\.0\.0\.1:\d+: .*EADDRINUSE/);
    } finally {
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
  });

  it.each(["tcp:0.0.0.0:0", "tcp:[::]:0", "tcp:10.1.2.3:9100", "tcp:192.168.0.1:0"])(
    "refuses the non-loopback %s with a clear error",
    async (listen) => {
      const err = await listenStatus(statusApp(source), listen).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(/is not a loopback address/);
    },
  );

  it.each(["http://127.0.0.1:9100", "tcp:127.0.0.1", "unix:"])(
    "refuses the malformed %s",
    async (listen) => {
      await expect(listenStatus(statusApp(source), listen)).rejects.toThrow(UsageError);
    },
  );
});
