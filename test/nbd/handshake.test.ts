/**
 * The handshake phase against a live server, spoken byte by byte.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memory, type TestServer, startServer } from "./fixtures.ts";
import { INFO, MAGIC, OPT, REP, RawClient } from "./raw-client.ts";

describe("NBD handshake", () => {
  let t: TestServer;

  beforeAll(async () => {
    t = await startServer(
      {
        disk: { device: memory(1 << 20), description: "the disk" },
        ro: { device: memory(64 << 10), readOnly: true },
      },
      { defaultExport: "disk" },
    );
  });
  afterAll(() => t.close());

  /** A second client that must still work while another misbehaves. */
  async function stillServing(): Promise<void> {
    const c = await t.connect();
    const { size } = await c.handshake("disk");
    expect(size).toBe(1 << 20);
    c.close();
  }

  it("greets with fixed newstyle and NO_ZEROES", async () => {
    const c = await t.connect();
    const { handshakeFlags } = await c.greet();
    expect(handshakeFlags).toBe(0b11);
    c.close();
  });

  it("goes to transmission with OPT_GO and reports size and flags", async () => {
    const c = await t.connect();
    const { size, flags } = await c.handshake("disk");
    expect(size).toBe(1 << 20);
    expect(flags & 1).toBe(1); // HAS_FLAGS
    expect(flags & 2).toBe(0); // not read-only
    c.close();
  });

  it("maps the empty name to the default export", async () => {
    const c = await t.connect();
    await c.greet();
    const r = await c.go("", [INFO.NAME]);
    expect(r.final).toBe(REP.ACK);
    const name = r.replies.find((x) => x.type === REP.INFO && x.data.readUInt16BE(0) === INFO.NAME);
    expect(name?.data.toString("utf8", 2)).toBe("disk");
    c.close();
  });

  it("answers OPT_INFO with name, description and block sizes, and stays in negotiation", async () => {
    const c = await t.connect();
    await c.greet();
    const r = await c.go("disk", [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE], OPT.INFO);
    expect(r.final).toBe(REP.ACK);
    const infos = new Map(
      r.replies.filter((x) => x.type === REP.INFO).map((x) => [x.data.readUInt16BE(0), x.data]),
    );
    expect(infos.get(INFO.DESCRIPTION)?.toString("utf8", 2)).toBe("the disk");
    const bs = infos.get(INFO.BLOCK_SIZE)!;
    expect([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)]).toEqual([
      512,
      4096,
      32 << 20,
    ]);
    expect(infos.get(INFO.EXPORT)?.length).toBe(12);
    // Still negotiating: a GO works afterwards.
    expect((await c.go("disk")).final).toBe(REP.ACK);
    c.close();
  });

  it("refuses an unknown export with ERR_UNKNOWN and lets the client try again", async () => {
    const c = await t.connect();
    await c.greet();
    expect((await c.go("nope")).final).toBe(REP.ERR_UNKNOWN);
    expect((await c.go("nope", [], OPT.INFO)).final).toBe(REP.ERR_UNKNOWN);
    expect((await c.go("disk")).final).toBe(REP.ACK);
    c.close();
  });

  it("marks a read-only export READ_ONLY and hides write features", async () => {
    const c = await t.connect();
    const { flags } = await c.handshake("ro");
    expect(flags & 2).toBe(2);
    expect(flags & (8 | 32 | 64)).toBe(0); // no FUA, TRIM, WRITE_ZEROES
    c.close();
  });

  it("lists exports with their descriptions", async () => {
    const c = await t.connect();
    await c.greet();
    const replies = await c.option(OPT.LIST);
    const servers = replies
      .filter((r) => r.type === REP.SERVER)
      .map((r) => {
        const n = r.data.readUInt32BE(0);
        return [r.data.toString("utf8", 4, 4 + n), r.data.toString("utf8", 4 + n)];
      });
    expect(servers).toEqual([
      ["disk", "the disk"],
      ["ro", ""],
    ]);
    expect(replies.at(-1)?.type).toBe(REP.ACK);
    expect((await c.option(OPT.LIST, Buffer.from("x"))).at(-1)?.type).toBe(REP.ERR_INVALID);
    c.close();
  });

  it("answers unknown options, STARTTLS and EXTENDED_HEADERS with ERR_UNSUP", async () => {
    const c = await t.connect();
    await c.greet();
    for (const opt of [42, 4, OPT.STARTTLS, OPT.EXTENDED_HEADERS]) {
      const [r] = await c.option(opt);
      expect([r!.option, r!.type]).toEqual([opt, REP.ERR_UNSUP]);
    }
    expect((await c.go("disk")).final).toBe(REP.ACK);
    c.close();
  });

  it("negotiates structured replies, refusing option data", async () => {
    const c = await t.connect();
    await c.greet();
    expect((await c.option(OPT.STRUCTURED_REPLY, Buffer.from([1])))[0]!.type).toBe(REP.ERR_INVALID);
    expect(await c.negotiateStructured()).toBe(REP.ACK);
    const { flags } = await c.go("disk").then((r) => ({ flags: r.flags! }));
    expect(flags & 128).toBe(128); // SEND_DF once structured
    c.close();
  });

  it("lists and sets the base:allocation meta context", async () => {
    const c = await t.connect();
    await c.greet();
    // SET before structured replies is invalid.
    expect((await c.setMetaContext("disk", ["base:allocation"])).final).toBe(REP.ERR_INVALID);
    await c.negotiateStructured();
    const all = await c.setMetaContext("disk", [], OPT.LIST_META_CONTEXT);
    expect(all).toEqual({ contexts: [{ id: 0, name: "base:allocation" }], final: REP.ACK });
    const wildcard = await c.setMetaContext("disk", ["base:"], OPT.LIST_META_CONTEXT);
    expect(wildcard.contexts.map((x) => x.name)).toEqual(["base:allocation"]);
    const foreign = await c.setMetaContext(
      "disk",
      ["qemu:dirty-bitmap:x", "base:other"],
      OPT.LIST_META_CONTEXT,
    );
    expect(foreign).toEqual({ contexts: [], final: REP.ACK });
    expect((await c.setMetaContext("disk", ["nocolon"])).final).toBe(REP.ERR_INVALID);
    expect((await c.setMetaContext("nope", ["base:allocation"])).final).toBe(REP.ERR_UNKNOWN);
    const set = await c.setMetaContext("disk", ["base:allocation", "x-other:thing"]);
    expect(set.final).toBe(REP.ACK);
    expect(set.contexts).toHaveLength(1);
    expect(set.contexts[0]!.name).toBe("base:allocation");
    expect(set.contexts[0]!.id).not.toBe(0);
    c.close();
  });

  it("honours NO_ZEROES on OPT_EXPORT_NAME and sends the 124 zeroes otherwise", async () => {
    const withZeroes = await t.connect();
    await withZeroes.greet(1); // fixed newstyle, no NO_ZEROES
    withZeroes.sendOption(OPT.EXPORT_NAME, Buffer.from("disk"));
    const reply = await withZeroes.read(134);
    expect(Number(reply.readBigUInt64BE(0))).toBe(1 << 20);
    expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
    // The 124 zeroes were the whole reply: a request is answered right after them.
    withZeroes.send({ type: 3, handle: 7n });
    expect((await withZeroes.reply()).handle).toBe(7n);
    withZeroes.close();

    const noZeroes = await t.connect();
    await noZeroes.greet(3);
    noZeroes.sendOption(OPT.EXPORT_NAME, Buffer.from("disk"));
    const short = await noZeroes.read(10);
    expect(short.readUInt16BE(8) & 1).toBe(1);
    noZeroes.send({ type: 3, handle: 8n });
    expect((await noZeroes.reply()).handle).toBe(8n);
    noZeroes.close();
  });

  it("serves a non-fixed newstyle client that sends only EXPORT_NAME", async () => {
    const c = await t.connect();
    await c.greet(0);
    c.sendOption(OPT.EXPORT_NAME, Buffer.alloc(0));
    const reply = await c.read(134);
    expect(Number(reply.readBigUInt64BE(0))).toBe(1 << 20);
    c.close();
  });

  it("drops a non-fixed newstyle client that sends another option", async () => {
    const c = await t.connect();
    await c.greet(0);
    c.sendOption(OPT.LIST);
    expect((await c.drainToClose()).length).toBe(0);
    await stillServing();
  });

  it("drops the connection on unknown client flags", async () => {
    const c = await t.connect();
    await c.greet(0x80000001);
    expect((await c.drainToClose()).length).toBe(0);
    await stillServing();
  });

  it("drops the connection on a bad option magic", async () => {
    const c = await t.connect();
    await c.greet();
    c.write(Buffer.from("GARBAGE!GARBAGE!"));
    await c.closed;
    await stillServing();
  });

  it("drops the connection on an unknown export via EXPORT_NAME", async () => {
    const c = await t.connect();
    await c.greet();
    c.sendOption(OPT.EXPORT_NAME, Buffer.from("nope"));
    expect((await c.drainToClose()).length).toBe(0);
  });

  it("answers an oversized option with ERR_TOO_BIG after discarding its data", async () => {
    const c = await t.connect();
    await c.greet();
    const size = 200 * 1024;
    c.sendOption(OPT.INFO, Buffer.alloc(size, 0x41));
    const [r] = await c.optionReplies();
    expect(r!.type).toBe(REP.ERR_TOO_BIG);
    expect((await c.go("disk")).final).toBe(REP.ACK);
    c.close();
  });

  it("rejects malformed OPT_GO data with ERR_INVALID", async () => {
    const c = await t.connect();
    await c.greet();
    const [r] = await c.option(OPT.GO, Buffer.from([0, 0, 0, 9, 0x41]));
    expect(r!.type).toBe(REP.ERR_INVALID);
    expect((await c.go("disk")).final).toBe(REP.ACK);
    c.close();
  });

  it("acknowledges OPT_ABORT and closes", async () => {
    const c = await t.connect();
    await c.greet();
    c.sendOption(OPT.ABORT);
    const [r] = await c.optionReplies();
    expect(r!.type).toBe(REP.ACK);
    await c.closed;
  });

  it("survives a client that disconnects halfway through an option", async () => {
    const c = await t.connect();
    await c.greet();
    c.sendOption(OPT.GO, Buffer.from([0, 0]), 40); // promises 40 bytes, sends 2
    c.close();
    await c.closed;
    await stillServing();
  });

  it("survives a client that sends garbage instead of a greeting reply", async () => {
    const c = await RawClient.connect(t.socket);
    const greeting = await c.read(18);
    expect(greeting.readBigUInt64BE(0)).toBe(MAGIC.NBD);
    c.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await c.closed;
    await stillServing();
  });
});
