/**
 * Connection limits, per export and in total. A client over a limit is
 * told so: NBD_REP_ERR_POLICY with the reason on NBD_OPT_GO (and on every
 * option, for one over the total), the connection dropped on
 * NBD_OPT_EXPORT_NAME, which cannot carry an error. Clients already served
 * go on as before, and a place a client leaves is given to the next.
 */
import { afterEach, describe, expect, it } from "vitest";
import { runTool } from "../harness/tools.ts";
import { memory, pattern, RecordingLogger, type TestServer, startServer } from "./fixtures.ts";
import { CMD, infoData, OPT, REP, RawClient } from "./raw-client.ts";

let t: TestServer | undefined;
const open: RawClient[] = [];
afterEach(async () => {
  for (const c of open.splice(0)) c.close();
  await t?.close();
  t = undefined;
});

async function connect(server: TestServer): Promise<RawClient> {
  const c = await server.connect();
  open.push(c);
  return c;
}

/** The client still does I/O: a write and its read-back. */
async function stillServed(c: RawClient, seed: number): Promise<void> {
  const data = pattern(4096, seed);
  const handle = BigInt(seed * 10);
  const w = await c.request({ type: CMD.WRITE, handle, offset: seed * 4096, payload: data });
  expect(w.error).toBe(0);
  const r = await c.request({ type: CMD.READ, handle: handle + 1n, offset: seed * 4096, length: 4096 });
  expect(r.data?.equals(data)).toBe(true);
}

const message = (reply: { data: Buffer }) => reply.data.toString("utf8");

describe("NBD connection limit per export", () => {
  it("refuses NBD_OPT_GO on a full export with ERR_POLICY, serves the others, and frees the place on leave", async () => {
    const logger = new RecordingLogger();
    t = await startServer(
      { disk: memory(), other: memory() },
      { maxConnectionsPerExport: 2, logger },
    );
    const a = await connect(t);
    await a.handshake("disk");
    const b = await connect(t);
    await b.handshake("disk");

    const c = await connect(t);
    await c.greet();
    // INFO only looks: it takes no place and is answered as usual.
    expect((await c.go("disk", [], OPT.INFO)).final).toBe(REP.ACK);
    const refused = await c.go("disk");
    expect(refused.final).toBe(REP.ERR_POLICY);
    expect(refused.replies).toHaveLength(1);
    expect(message(refused.replies[0]!)).toMatch(/too many connections to export "disk" \(limit 2\)/);
    // The same client may still pick an export with room.
    expect((await c.go("other")).final).toBe(REP.ACK);

    await stillServed(a, 1);
    await stillServed(b, 2);
    expect(t.server.stats.byExport).toEqual({ disk: 2, other: 1 });
    expect(t.server.stats.refused).toBe(1);

    a.close();
    await logger.logged("nbd client disconnected");
    const d = await connect(t);
    await d.handshake("disk");
    await stillServed(d, 3);
  });

  it("drops a client that asks for a full export with NBD_OPT_EXPORT_NAME", async () => {
    t = await startServer({ disk: memory() }, { maxConnectionsPerExport: 1 });
    const a = await connect(t);
    await a.handshake("disk");
    const c = await connect(t);
    await c.greet();
    c.sendOption(OPT.EXPORT_NAME, Buffer.from("disk"));
    // No export info: the spec's only answer is to end the session.
    expect((await c.drainToClose()).length).toBe(0);
    await stillServed(a, 1);
    expect(t.server.stats.refused).toBe(1);
  });

  it("is what qemu-img reports, with our reason, while other clients keep their place", async () => {
    t = await startServer({ disk: memory() }, { maxConnectionsPerExport: 1 });
    const a = await connect(t);
    await a.handshake("disk");
    const uri = `nbd+unix:///disk?socket=${t.socket}`;
    const qemu = await runTool("qemu-img", ["info", uri], { allowFailure: true });
    expect(qemu.code).not.toBe(0);
    expect(qemu.stderr).toMatch(/too many connections to export "disk" \(limit 1\)/);
    const nbdinfo = await runTool("nbdinfo", [uri], { allowFailure: true });
    expect(nbdinfo.code).not.toBe(0);
    expect(nbdinfo.stderr).toMatch(/opt_go/);
    await stillServed(a, 1);
  });
});

describe("NBD connection limit in total", () => {
  it("refuses every option of a connection over the limit, counts negotiating clients, and lets the next one in", async () => {
    const logger = new RecordingLogger();
    t = await startServer({ disk: memory() }, { maxConnections: 2, logger });
    const a = await connect(t);
    await a.handshake("disk");
    // Still negotiating, but it holds a place.
    const b = await connect(t);
    await b.greet();

    const c = await connect(t);
    await c.greet();
    const [structured] = await c.option(OPT.STRUCTURED_REPLY);
    expect(structured!.type).toBe(REP.ERR_POLICY);
    const [list] = await c.option(OPT.LIST);
    expect(list!.type).toBe(REP.ERR_POLICY);
    const [go] = await c.option(OPT.GO, infoData("disk", []));
    expect(go!.type).toBe(REP.ERR_POLICY);
    expect(message(go!)).toMatch(/too many connections to this server \(limit 2\)/);
    // A soft disconnect is acknowledged, as from any client.
    const [abort] = await c.option(OPT.ABORT);
    expect(abort!.type).toBe(REP.ACK);
    await c.closed;

    await stillServed(a, 1);
    expect((await b.go("disk")).final).toBe(REP.ACK);
    await stillServed(b, 2);
    expect(t.server.stats.refused).toBe(1);
    expect(t.server.stats.connections).toBe(2);

    b.close();
    // The refused client's leaving was the first.
    await logger.logged("nbd client disconnected", 2);
    const d = await connect(t);
    await d.handshake("disk");
    await stillServed(d, 3);
  });

  it("closes connections past those it is already refusing without a word", async () => {
    t = await startServer({ disk: memory() }, { maxConnections: 1 });
    const a = await connect(t);
    await a.handshake("disk");
    // The server tells sixteen at a time that they are refused...
    const refusing: RawClient[] = [];
    for (let i = 0; i < 16; i++) {
      const c = await connect(t);
      await c.greet();
      refusing.push(c);
    }
    // ... and closes the seventeenth before it gets even a greeting.
    const silent = await connect(t);
    expect((await silent.drainToClose()).length).toBe(0);
    expect(t.server.stats.refused).toBe(17);
    await stillServed(a, 1);
  });
});
