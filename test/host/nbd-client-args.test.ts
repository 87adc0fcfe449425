/**
 * nbd-client's command line and output, the choice of binding kind and the
 * request checks, as the pure functions they are; where the installed
 * nbd-client can answer without the kernel module, its real output is used.
 */
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { checkBindRequest, type CheckedRequest } from "../../agent/host/binding.ts";
import { exportUri } from "../../agent/host/fuse-loop-driver.ts";
import {
  DEFAULT_TIMEOUT_SECONDS,
  isUnreachable,
  nbdClientFeatures,
  nbdConnectArgs,
  nbdDisconnectArgs,
  nbdIndex,
  parseConnected,
} from "../../agent/host/nbd-client-args.ts";
import { chooseKind, type HostSupport } from "../../agent/host/open-binder.ts";
import { runTool, toolPath } from "../harness/tools.ts";

const request: CheckedRequest = checkBindRequest(
  {
    volume: "vol1",
    socketPath: "/run/pagedisk/vol1.sock",
    exportName: "vol1",
    sizeBytes: 1 << 30,
    identifier: "pagedisk:node1:vol1:7",
    connections: 4,
  },
  2,
);

describe("nbd-client arguments", () => {
  it("connects over netlink with multi-conn, block size and timeout, letting the kernel pick the device", () => {
    expect(nbdConnectArgs(request, { identifier: false, deadTimeout: false })).toEqual([
      "-N", "vol1", "-u", "/run/pagedisk/vol1.sock",
      "-b", "4096", "-C", "4", "-t", String(DEFAULT_TIMEOUT_SECONDS),
    ]);
  });

  it("reuses a device, and passes the identifier and dead-connection timeout where nbd-client knows them", () => {
    const req = { ...request, timeoutSeconds: 30, readOnly: true, blockSize: 512 };
    expect(nbdConnectArgs(req, { identifier: true, deadTimeout: true }, "/dev/nbd3")).toEqual([
      "-N", "vol1", "-u", "/run/pagedisk/vol1.sock", "/dev/nbd3",
      "-b", "512", "-C", "4", "-t", "30",
      "-dead-timeout", "30", "-identifier", "pagedisk:node1:vol1:7", "-R",
    ]);
  });

  it("never passes -nonetlink, and keeps an export name that looks like an option an argument", () => {
    const args = nbdConnectArgs({ ...request, exportName: "-d" }, { identifier: false, deadTimeout: false });
    expect(args).not.toContain("-L");
    expect(args).not.toContain("-nonetlink");
    expect(args.slice(0, 2)).toEqual(["-N", "-d"]);
  });

  it("refuses a device that is not /dev/nbdN", () => {
    expect(() => nbdConnectArgs(request, { identifier: false, deadTimeout: false }, "/dev/sda")).toThrow(RangeError);
    expect(() => nbdDisconnectArgs("/dev/loop0")).toThrow(RangeError);
    expect(nbdDisconnectArgs("/dev/nbd12")).toEqual(["-d", "/dev/nbd12"]);
    expect(nbdIndex("/dev/nbd12")).toBe(12);
    expect(nbdIndex("/dev/nbd12p1")).toBeNull();
  });
});

describe("nbd-client output", () => {
  it("finds the device nbd-client connected", () => {
    const stdout = [
      "Negotiation: ..size = 1024MB",
      "Connected /dev/nbd3",
      "",
    ].join("\n");
    expect(parseConnected(stdout)).toBe("/dev/nbd3");
    expect(parseConnected("Negotiation: ..size = 1024MB\n")).toBeNull();
    expect(parseConnected("Not Connected /dev/nbd3\n")).toBeNull();
  });

  it("tells a missing server from other failures, on the installed nbd-client's own words", async () => {
    const out = await runTool(
      "nbd-client",
      ["-N", "vol1", "-u", "/nonexistent/pagedisk.sock", "-b", "4096"],
      { allowFailure: true },
    );
    expect(out.code).not.toBe(0);
    expect(isUnreachable(out.stdout + out.stderr)).toBe(true);
    expect(isUnreachable("Error: Couldn't resolve the nbd netlink family, make sure the nbd module is loaded")).toBe(false);
  });

  it("reads the installed nbd-client's options from its binary, agreeing with what it accepts", async () => {
    const features = nbdClientFeatures(await readFile(toolPath("nbd-client")));
    // With -identifier known, "-identifier x -h" prints usage and succeeds; unknown, it fails.
    const probe = await runTool("nbd-client", ["-identifier", "x", "-h"], { allowFailure: true });
    expect(features.identifier).toBe(probe.code === 0);
    expect(nbdClientFeatures(Buffer.from("\0block-size\0identifier\0dead-timeout\0"))).toEqual({
      identifier: true,
      deadTimeout: true,
    });
    expect(nbdClientFeatures(Buffer.from("identifiers\0 dead-timeout-x"))).toEqual({
      identifier: false,
      deadTimeout: false,
    });
  });
});

describe("binding kind", () => {
  const all: HostSupport = {
    nbdDriver: true,
    nbdClient: true,
    nbdfuse: true,
    losetup: true,
    fusermount3: true,
    devFuse: true,
  };

  it("prefers nbd, falls back to fuse-loop, and names what is missing otherwise", () => {
    expect(chooseKind("auto", all)).toBe("nbd");
    expect(chooseKind("auto", { ...all, nbdDriver: false })).toBe("fuse-loop");
    expect(chooseKind("auto", { ...all, nbdClient: false })).toBe("fuse-loop");
    expect(chooseKind("fuse", all)).toBe("fuse-loop");
    expect(() => chooseKind("nbd", { ...all, nbdDriver: false })).toThrow(/nbd kernel module/);
    expect(() => chooseKind("fuse", { ...all, devFuse: false })).toThrow(/\/dev\/fuse/);
    const none = { ...all, nbdDriver: false, nbdfuse: false };
    expect(() => chooseKind("auto", none)).toThrow(
      expect.objectContaining({ code: "DRIVER_MISSING", message: expect.stringMatching(/nbd kernel module.*nbdfuse/) }),
    );
  });
});

describe("bind requests", () => {
  it("fill in one connection per CPU, 4096-byte blocks, read-write", () => {
    expect(request).toMatchObject({ connections: 4, blockSize: 4096, readOnly: false, timeoutSeconds: undefined });
    const defaults = checkBindRequest({ ...request, connections: undefined, timeoutSeconds: undefined }, 3);
    expect(defaults.connections).toBe(3);
  });

  it("reach libnbd as a URI with the export name and socket escaped", () => {
    expect(exportUri("/run/pagedisk/vol1.sock", "vol1")).toBe("nbd+unix:///vol1?socket=/run/pagedisk/vol1.sock");
    expect(exportUri("/run/a b/s.sock", "x/y?")).toBe("nbd+unix:///x%2Fy%3F?socket=/run/a%20b/s.sock");
  });
});
