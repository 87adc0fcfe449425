/**
 * Wire encoding and request validation, checked against byte layouts
 * written out from the spec.
 */
import { describe, expect, it } from "vitest";
import { DEFAULT_BLOCK_SIZES, ExportCatalog, transmissionFlags } from "../../agent/nbd/catalog.ts";
import {
  type Session,
  parseInfoRequest,
  parseMetaContextRequest,
} from "../../agent/nbd/negotiation.ts";
import {
  blockStatusChunk,
  errorChunk,
  noneChunk,
  offsetDataHeader,
  offsetHoleChunk,
  optionError,
  readUInt64,
  simpleReply,
  writeUInt64,
} from "../../agent/nbd/replies.ts";
import { decodeRequest, type Request, validateRequest } from "../../agent/nbd/requests.ts";
import { toDescriptors } from "../../agent/nbd/transmission.ts";
import { ProtocolViolation } from "../../agent/nbd/violation.ts";
import { memory } from "./fixtures.ts";
import { CMD, FLAG, infoData, metaContextData } from "./raw-client.ts";

const H = { handleHi: 0x01020304, handleLo: 0x05060708 };
/** Wire bytes written field by field, as the spec lays them out. */
const hex = (...fields: string[]) => fields.join("");

describe("reply encoding", () => {
  it("encodes an option error reply with its message", () => {
    const b = optionError(7, 0x80000006, "nope");
    expect(b.toString("hex")).toBe(
      hex(
        "0003e889045565a9",
        "00000007",
        "80000006",
        "00000004",
        Buffer.from("nope").toString("hex"),
      ),
    );
  });

  it("encodes a simple reply", () => {
    expect(simpleReply(H, 22).toString("hex")).toBe(
      hex("67446698", "00000016", "0102030405060708"),
    );
  });

  it("encodes structured chunks: NONE, OFFSET_DATA header, OFFSET_HOLE, ERROR", () => {
    expect(noneChunk(H).toString("hex")).toBe(
      hex("668e33ef0001", "0000", "0102030405060708", "00000000"),
    );
    expect(offsetDataHeader(H, 2 ** 33 + 5, 4096, true).toString("hex")).toBe(
      hex("668e33ef0001", "0001", "0102030405060708", "00001008", "0000000200000005"),
    );
    expect(offsetDataHeader(H, 0, 1, false).readUInt16BE(4)).toBe(0);
    expect(offsetHoleChunk(H, 512, 1024, true).toString("hex")).toBe(
      hex("668e33ef0001", "0002", "0102030405060708", "0000000c", "0000000000000200", "00000400"),
    );
    const err = errorChunk(H, 5, "boom");
    expect(err.toString("hex")).toBe(
      hex(
        "668e33ef0001",
        "8001",
        "0102030405060708",
        "0000000a",
        "00000005",
        "0004",
        Buffer.from("boom").toString("hex"),
      ),
    );
  });

  it("keeps error messages within the protocol's string limit and free of NUL", () => {
    const long = errorChunk(H, 5, `a\0b${"é".repeat(5000)}`);
    const msgLength = long.readUInt16BE(24);
    expect(msgLength).toBeLessThanOrEqual(4096);
    expect(long.readUInt32BE(16)).toBe(6 + msgLength);
    expect(long.subarray(26).includes(0)).toBe(false);
  });

  it("encodes a block status chunk with the context id and hole/zero flags", () => {
    const b = blockStatusChunk(H, 9, [
      { length: 4096, hole: true, zero: true },
      { length: 512, hole: false, zero: false },
    ]);
    expect(b.toString("hex")).toBe(
      hex(
        "668e33ef0001",
        "0005",
        "0102030405060708",
        "00000014",
        "00000009",
        "00001000",
        "00000003",
        "00000200",
        "00000000",
      ),
    );
  });

  it("round-trips 64-bit values without BigInt", () => {
    const b = Buffer.alloc(8);
    writeUInt64(b, 2 ** 52 + 3, 0);
    expect(b.readBigUInt64BE(0)).toBe(2n ** 52n + 3n);
    expect(readUInt64(b, 0)).toBe(2 ** 52 + 3);
  });
});

describe("option data parsing", () => {
  it("parses NBD_OPT_GO data and rejects inconsistent lengths", () => {
    expect(parseInfoRequest(infoData("disk", [1, 3]))).toEqual({
      name: "disk",
      items: new Set([1, 3]),
    });
    expect(parseInfoRequest(infoData("", []))).toEqual({ name: "", items: new Set() });
    const bad = infoData("disk", [1]);
    expect(parseInfoRequest(bad.subarray(0, bad.length - 1))).toBeUndefined();
    const longName = Buffer.from(bad);
    longName.writeUInt32BE(1000, 0);
    expect(parseInfoRequest(longName)).toBeUndefined();
    expect(parseInfoRequest(Buffer.alloc(3))).toBeUndefined();
  });

  it("parses meta context data and rejects queries running past the end", () => {
    expect(parseMetaContextRequest(metaContextData("x", ["base:allocation", "qemu:"]))).toEqual({
      name: "x",
      queries: ["base:allocation", "qemu:"],
    });
    const data = metaContextData("x", ["base:allocation"]);
    expect(parseMetaContextRequest(data.subarray(0, data.length - 2))).toBeUndefined();
    expect(parseMetaContextRequest(Buffer.concat([data, Buffer.from([0])]))).toBeUndefined();
    const lying = Buffer.from(data);
    lying.writeUInt32BE(5, 4 + 1); // claims 5 queries, carries 1
    expect(parseMetaContextRequest(lying)).toBeUndefined();
  });
});

function session(
  opts: { readOnly?: boolean; structured?: boolean; meta?: boolean; size?: number } = {},
): Session {
  const catalog = new ExportCatalog();
  const exp = catalog.add("d", memory(opts.size ?? 1 << 20), { readOnly: opts.readOnly ?? false });
  const structured = opts.structured ?? true;
  return {
    export: exp,
    structuredReplies: structured,
    metaContextId: opts.meta ? 1 : 0,
    flags: transmissionFlags(exp, structured),
  };
}

function req(type: number, offset = 0, length = 4096, flags = 0): Request {
  return { type, flags, offset, length, handleHi: 0, handleLo: 1, payload: undefined };
}

describe("request decoding and validation", () => {
  it("decodes a request header and refuses a bad magic", () => {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(FLAG.FUA, 4);
    h.writeUInt16BE(CMD.WRITE, 6);
    h.writeBigUInt64BE(0xaabbccdd00112233n, 8);
    h.writeBigUInt64BE(2n ** 40n, 16);
    h.writeUInt32BE(512, 24);
    expect(decodeRequest(h)).toMatchObject({
      type: CMD.WRITE,
      flags: FLAG.FUA,
      handleHi: 0xaabbccdd,
      handleLo: 0x00112233,
      offset: 2 ** 40,
      length: 512,
    });
    h.writeUInt32BE(0x12345678, 0);
    expect(() => decodeRequest(h)).toThrow(ProtocolViolation);
  });

  it("accepts well-formed requests, including unaligned ones (the device aligns)", () => {
    const s = session({ meta: true });
    expect(validateRequest(req(CMD.READ, 0, 4096, FLAG.DF), s)).toBeUndefined();
    expect(validateRequest(req(CMD.WRITE, 1, 3, FLAG.FUA), s)).toBeUndefined();
    expect(validateRequest(req(CMD.FLUSH, 0, 0), s)).toBeUndefined();
    expect(
      validateRequest(req(CMD.WRITE_ZEROES, 0, 4096, FLAG.NO_HOLE | FLAG.FAST_ZERO), s),
    ).toBeUndefined();
    expect(validateRequest(req(CMD.BLOCK_STATUS, 0, 1 << 20, FLAG.REQ_ONE), s)).toBeUndefined();
    expect(validateRequest(req(CMD.TRIM, 0, 1 << 20), s)).toBeUndefined();
    expect(validateRequest(req(CMD.CACHE, 0, 4096), s)).toBeUndefined();
  });

  it("answers what the spec prescribes for bad requests", () => {
    const s = session();
    const errno = (r: Request, sess = s) => validateRequest(r, sess)?.errno;
    expect(errno(req(99))).toBe("EINVAL"); // unknown command
    expect(errno(req(CMD.READ, 0, 4096, 0x40))).toBe("EINVAL"); // unknown flag
    expect(errno(req(CMD.WRITE, 0, 4096, FLAG.DF))).toBe("EINVAL"); // flag not valid for the command
    expect(errno(req(CMD.READ, 0, 0))).toBe("EINVAL"); // zero length
    expect(errno(req(CMD.READ, (1 << 20) - 512, 1024))).toBe("EINVAL"); // read past the end
    expect(errno(req(CMD.TRIM, 1 << 20, 512))).toBe("EINVAL"); // trim past the end
    expect(errno(req(CMD.WRITE, (1 << 20) - 512, 1024))).toBe("ENOSPC"); // write past the end
    expect(errno(req(CMD.WRITE_ZEROES, 2 ** 60, 512))).toBe("ENOSPC");
    expect(errno(req(CMD.READ, 0, 32 * 1024 * 1024 + 512))).toBe("EINVAL"); // over the maximum
    expect(errno(req(CMD.FLUSH, 0, 512))).toBe("EINVAL"); // flush with a length
    expect(errno(req(CMD.BLOCK_STATUS, 0, 4096))).toBe("EINVAL"); // no meta context
    const ro = session({ readOnly: true });
    expect(errno(req(CMD.WRITE), ro)).toBe("EPERM");
    expect(errno(req(CMD.TRIM), ro)).toBe("EPERM");
    expect(errno(req(CMD.WRITE_ZEROES), ro)).toBe("EPERM");
    expect(errno(req(CMD.READ, 0, 4096, FLAG.FUA), ro)).toBe("EINVAL"); // FUA not advertised
    const simple = session({ structured: false });
    expect(errno(req(CMD.READ, 0, 4096, FLAG.DF), simple)).toBe("EINVAL"); // DF needs structured
  });

  it("lets TRIM and fast zeroing exceed the maximum block size, as the spec allows", () => {
    const s = session({ meta: true, size: 64 << 20 });
    expect(validateRequest(req(CMD.TRIM, 0, 48 << 20), s)).toBeUndefined();
    expect(validateRequest(req(CMD.WRITE_ZEROES, 0, 48 << 20, FLAG.FAST_ZERO), s)).toBeUndefined();
    expect(validateRequest(req(CMD.BLOCK_STATUS, 0, 48 << 20), s)).toBeUndefined();
    expect(validateRequest(req(CMD.WRITE_ZEROES, 0, 48 << 20), s)?.errno).toBe("EINVAL");
  });
});

describe("block status descriptors", () => {
  const extents = [
    { offset: 0, length: 4096, hole: false, zero: false },
    { offset: 4096, length: 0, hole: true, zero: true },
    { offset: 4096, length: 8192, hole: true, zero: true },
  ];

  it("drops empty extents and never describes more than requested", () => {
    expect(toDescriptors(extents, { length: 6000, flags: 0 })).toEqual([
      { length: 4096, hole: false, zero: false },
      { length: 1904, hole: true, zero: true },
    ]);
  });

  it("returns exactly one descriptor with REQ_ONE, clipped to the request", () => {
    expect(toDescriptors(extents, { length: 1024, flags: FLAG.REQ_ONE })).toEqual([
      { length: 1024, hole: false, zero: false },
    ]);
  });
});

describe("export catalog", () => {
  it("resolves the empty name to the only export, or to the named default", () => {
    const one = new ExportCatalog();
    const d = one.add("disk", memory());
    expect(one.resolve("")).toBe(d);
    expect(one.resolve("other")).toBeUndefined();
    const two = new ExportCatalog(DEFAULT_BLOCK_SIZES, "b");
    two.add("a", memory());
    const b = two.add("b", memory());
    expect(two.resolve("")).toBe(b);
    const none = new ExportCatalog();
    none.add("a", memory());
    none.add("b", memory());
    expect(none.resolve("")).toBeUndefined();
  });

  it("refuses block sizes the spec forbids and sizes not a multiple of the minimum", () => {
    expect(() => new ExportCatalog({ minimum: 3, preferred: 4096, maximum: 1 << 20 })).toThrow(
      RangeError,
    );
    expect(() => new ExportCatalog({ minimum: 512, preferred: 256, maximum: 1 << 20 })).toThrow(
      RangeError,
    );
    expect(() => new ExportCatalog({ minimum: 512, preferred: 4096, maximum: 1000 })).toThrow(
      RangeError,
    );
    const c = new ExportCatalog();
    expect(() =>
      c.add("x", memory(1 << 20), {
        blockSizes: { minimum: 4096, preferred: 4096, maximum: 1 << 20 },
      }),
    ).not.toThrow();
    expect(() => c.add("x", memory())).toThrow(/already exists/);
    expect(() => c.add("y", { ...memory(1 << 20), size: 1000 } as never)).toThrow(RangeError);
  });

  it("advertises write features only on writable exports and DF only with structured replies", () => {
    const c = new ExportCatalog();
    const rw = c.add("rw", memory());
    const ro = c.add("ro", memory(), { readOnly: true });
    const HAS_FLAGS = 1,
      READ_ONLY = 2,
      FLUSH = 4,
      FUA = 8,
      TRIM = 32,
      ZEROES = 64,
      DF = 128,
      MULTI = 256,
      CACHE = 1024,
      FAST = 2048;
    expect(transmissionFlags(rw, true)).toBe(
      HAS_FLAGS | FLUSH | FUA | TRIM | ZEROES | DF | MULTI | CACHE | FAST,
    );
    expect(transmissionFlags(rw, false) & DF).toBe(0);
    expect(transmissionFlags(ro, false)).toBe(HAS_FLAGS | READ_ONLY | FLUSH | MULTI | CACHE);
  });
});
