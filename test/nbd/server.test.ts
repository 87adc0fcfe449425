/**
 * Server lifecycle: listening (unix, TCP, stale sockets), graceful close,
 * graceful export removal, counters.
 */
import { spawn } from "node:child_process";
import { lstat, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { NbdServer } from "../../agent/nbd/server.ts";
import {
  memory,
  pattern,
  ProbeDevice,
  RecordingLogger,
  type TestServer,
  startServer,
} from "./fixtures.ts";
import { CMD, ERR, OPT, REP, RawClient } from "./raw-client.ts";

let t: TestServer | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await t?.close();
  t = undefined;
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "pagedisk-nbd-srv-"));
  dirs.push(d);
  return d;
}

describe("NbdServer", () => {
  it("close() answers requests in flight, refuses later ones with ESHUTDOWN, then disconnects", async () => {
    const device = new ProbeDevice(memory());
    t = await startServer({ disk: device });
    const c = await t.connect();
    await c.handshake("disk", { structured: true });
    const idle = await t.connect(); // still negotiating: simply ended
    await idle.greet();
    device.hold((call) => call.op === "read");
    c.send({ type: CMD.READ, handle: 1n, offset: 0, length: 4096 });
    await device.heldAtLeast(1);
    const closing = t.server.close();
    c.send({ type: CMD.READ, handle: 2n, offset: 0, length: 4096 });
    const refused = await c.reply();
    expect([refused.handle, refused.error]).toEqual([2n, ERR.ESHUTDOWN]);
    device.release();
    const answered = await c.reply();
    expect([answered.handle, answered.error, answered.data?.length]).toEqual([1n, 0, 4096]);
    await Promise.all([c.closed, idle.closed, closing]);
    await expect(RawClient.connect(t.socket)).rejects.toThrow();
  });

  it("removeExport() finishes pending requests, refuses new clients, disconnects only that export", async () => {
    const failing = new ProbeDevice(memory());
    t = await startServer({ vol1: failing, vol2: memory() });
    const a = await t.connect();
    await a.handshake("vol1");
    const b = await t.connect();
    await b.handshake("vol2");
    expect(t.server.stats.byExport).toEqual({ vol1: 1, vol2: 1 });

    // The volume fails: its pending request gets the device's EIO.
    failing.hold((call) => call.op === "write");
    failing.failWith(() => "EIO");
    a.send({ type: CMD.WRITE, handle: 1n, offset: 0, payload: pattern(4096) });
    await failing.heldAtLeast(1);
    const removed = t.server.removeExport("vol1");
    a.send({ type: CMD.READ, handle: 2n, offset: 0, length: 512 });
    expect(await a.reply()).toMatchObject({ handle: 2n, error: ERR.ESHUTDOWN });

    const late = await t.connect();
    await late.greet();
    expect((await late.go("vol1")).final).toBe(REP.ERR_UNKNOWN);
    const listed = await late.option(OPT.LIST);
    expect(listed.filter((r) => r.type === REP.SERVER)).toHaveLength(1);
    late.close();

    failing.release();
    expect(await a.reply()).toMatchObject({ handle: 1n, error: ERR.EIO });
    await Promise.all([a.closed, removed]);
    expect(t.server.exportNames()).toEqual(["vol2"]);
    expect((await b.request({ type: CMD.READ, handle: 3n, offset: 0, length: 512 })).error).toBe(0);
    expect(t.server.stats.byExport).toEqual({ vol2: 1 });
  });

  it("cuts connections still open when the grace period of close() ends", async () => {
    const device = new ProbeDevice(memory());
    const logger = new RecordingLogger();
    t = await startServer({ disk: device }, { logger });
    const c = await t.connect();
    await c.handshake("disk");
    device.hold(() => true); // a device that never answers
    c.send({ type: CMD.READ, handle: 1n, offset: 0, length: 512 });
    await device.heldAtLeast(1);
    await t.server.close({ graceMs: 20 });
    await c.closed;
    expect(logger.records.some((r) => r.msg.includes("cut after the grace period"))).toBe(true);
    device.release();
  });

  it("drops a client that does not finish the handshake in time, not one that did", async () => {
    t = await startServer({ disk: memory() }, { handshakeTimeoutMs: 50 });
    const served = await t.connect();
    await served.handshake("disk");
    const slow = await t.connect();
    await slow.greet();
    await slow.closed; // the server gave up on it
    expect((await served.request({ type: CMD.FLUSH, handle: 1n })).error).toBe(0);
  });

  it("counts connections, requests, bytes and errors", async () => {
    const logger = new RecordingLogger();
    t = await startServer({ disk: memory() }, { logger });
    const c1 = await t.connect();
    await c1.handshake("disk");
    const c2 = await t.connect();
    await c2.handshake("disk");
    await c1.request({ type: CMD.WRITE, handle: 1n, offset: 0, payload: pattern(4096) });
    await c2.request({ type: CMD.READ, handle: 2n, offset: 0, length: 1024 });
    await c2.request({ type: CMD.READ, handle: 3n, offset: 1 << 30, length: 1024 });
    const s = t.server.stats;
    expect(s).toMatchObject({
      connections: 2,
      accepted: 2,
      peakConnections: 2,
      requests: 3,
      errors: 1,
      bytesWritten: 4096,
      bytesRead: 1024,
      byExport: { disk: 2 },
    });
    c1.close();
    // The server sees the close a few event-loop turns after the client does.
    await logger.logged("nbd client disconnected");
    expect(t.server.stats.connections).toBe(1);
    expect(t.server.stats.peakConnections).toBe(2);
  });

  it("listens on TCP with an ephemeral port", async () => {
    const server = new NbdServer({ exports: { disk: memory() } });
    try {
      const addr = await server.listen({ host: "127.0.0.1", port: 0 });
      if (!("port" in addr)) throw new Error("expected a TCP address");
      expect(addr.port).toBeGreaterThan(0);
      const c = await RawClient.connect(addr);
      expect((await c.handshake("disk")).size).toBe(1 << 20);
      expect(
        (await c.request({ type: CMD.READ, handle: 1n, offset: 0, length: 4096 })).data?.length,
      ).toBe(4096);
      c.close();
    } finally {
      await server.close();
    }
  });

  it("replaces a stale unix socket, but not a live one nor a regular file", async () => {
    const dir = await tempDir();
    const path = join(dir, "nbd.sock");
    // A process that dies without cleaning up leaves a socket nobody answers on.
    const child = spawn(process.execPath, [
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`,
    ]);
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    expect((await lstat(path)).isSocket()).toBe(true);

    const live = new NbdServer({ exports: { disk: memory() } });
    await live.listen({ unix: path });
    const second = new NbdServer({ exports: { disk: memory() } });
    await expect(second.listen({ unix: path })).rejects.toThrow(/EADDRINUSE/);
    await second.close();
    const c = await RawClient.connect(path);
    expect((await c.handshake("disk")).size).toBe(1 << 20);
    c.close();
    await live.close();

    const file = join(dir, "not-a-socket");
    await writeFile(file, "keep me");
    const third = new NbdServer({ exports: { disk: memory() } });
    await expect(third.listen({ unix: file })).rejects.toThrow(/EADDRINUSE/);
    await third.close();
    expect((await lstat(file)).isFile()).toBe(true);
  });

  it("survives a burst of connections that send garbage and leave", async () => {
    const logger = new RecordingLogger();
    t = await startServer({ disk: memory() }, { logger });
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const c = await t!.connect();
        await c.read(18); // the greeting: garbage sent before it may never be parsed
        c.write(Buffer.alloc(7 + i * 13, i));
        c.close();
      }),
    );
    await logger.logged("nbd client disconnected", 20);
    // Every non-zero fill is read as unknown client flags; zeros run out mid-option.
    const violations = logger.records.filter((r) => r.msg.includes("protocol violation"));
    expect(violations).toHaveLength(19);
    // None reached the catch-all for bugs.
    expect(logger.records.filter((r) => r.level === "error")).toEqual([]);
    const c = await t.connect();
    await c.handshake("disk");
    expect((await c.request({ type: CMD.FLUSH, handle: 1n })).error).toBe(0);
  });
});
