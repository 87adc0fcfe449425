import { describe, expect, it } from "vitest";
import {
  nbdUri,
  parseDuration,
  parseLease,
  parseListen,
  parseSize,
  parseTarget,
  UsageError,
} from "../../agent/serve/args.ts";

describe("parseSize", () => {
  it.each([
    ["8GiB", 8 * 1024 ** 3],
    ["8g", 8 * 1024 ** 3],
    ["512MiB", 512 * 1024 ** 2],
    ["1.5K", 1536],
    ["4096", 4096],
    ["8TiB", 8 * 1024 ** 4],
  ])("%s = %d bytes", (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(["", "abc", "10", "0", "-512", "9TiB", "1.1K", "5 parsecs"])("rejects %j", (text) => {
    expect(() => parseSize(text)).toThrow(UsageError);
  });
});

describe("parseListen", () => {
  it("parses unix and tcp forms", () => {
    expect(parseListen("unix:/tmp/a.sock")).toEqual({ unix: "/tmp/a.sock" });
    expect(parseListen("tcp:127.0.0.1:10809")).toEqual({ host: "127.0.0.1", port: 10809 });
    expect(parseListen("tcp:[::1]:0")).toEqual({ host: "::1", port: 0 });
  });
  it.each(["unix:", "tcp:host", "tcp:h:99999", "udp:x:1", "/tmp/a.sock"])("rejects %j", (t) => {
    expect(() => parseListen(t)).toThrow(UsageError);
  });
});

describe("parseTarget and parseLease", () => {
  it("accepts memory sizes and blob URLs", () => {
    expect(parseTarget("memory:1GiB")).toEqual({ kind: "memory", size: 1024 ** 3 });
    const t = parseTarget("http://127.0.0.1:10000/devstoreaccount1/c/b.vhd?sv=x");
    expect(t.kind).toBe("blob");
  });
  it("rejects other schemes and bad leases", () => {
    expect(() => parseTarget("ftp://x/y")).toThrow(UsageError);
    expect(() => parseTarget("memory:7")).toThrow(UsageError);
    expect(() => parseLease("forever")).toThrow(UsageError);
    expect(parseLease("AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee")).toEqual({
      mode: "given",
      leaseId: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    });
  });
});

describe("nbdUri", () => {
  it("formats unix and tcp URIs that libnbd accepts", () => {
    expect(nbdUri({ unix: "/tmp/x y.sock" }, "vol1")).toBe("nbd+unix:///vol1?socket=/tmp/x%20y.sock");
    expect(nbdUri({ host: "::1", port: 10809 }, "")).toBe("nbd://[::1]:10809/");
  });
});

describe("parseDuration", () => {
  it.each([
    ["3s", 3000],
    ["500ms", 500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["7d", 604_800_000],
    ["10", 10_000],
  ])("%s = %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
  it.each(["", "3 weeks", "-1s", "1y"])("rejects %j", (text) => {
    expect(() => parseDuration(text)).toThrow(UsageError);
  });
});
