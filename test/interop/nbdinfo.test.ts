/**
 * nbdinfo (libnbd) against the in-process server: what a real client sees
 * of size, flags, block sizes, exports and allocation.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTool } from "../harness/tools.ts";
import { type MemoryServer, serveMemory } from "./memory-server.ts";

const MiB = 1024 * 1024;

interface InfoJson {
  protocol: string;
  structured: boolean;
  exports: Record<string, unknown>[];
}

async function nbdinfo(args: string[]): Promise<InfoJson> {
  return JSON.parse((await runTool("nbdinfo", ["--json", ...args])).stdout) as InfoJson;
}

describe("nbdinfo", () => {
  let srv: MemoryServer;

  beforeAll(async () => {
    srv = await serveMemory({
      disk: { size: 64 * MiB, description: "pagedisk test disk" },
      ro: { size: 8 * MiB, readOnly: true },
    });
  });
  afterAll(() => srv.close());

  it("reports size, every capability flag and the block sizes", async () => {
    const info = await nbdinfo([srv.uri("disk")]);
    expect(info.protocol).toBe("newstyle-fixed");
    expect(info.structured).toBe(true);
    expect(info.exports[0]).toMatchObject({
      "export-name": "disk",
      description: "pagedisk test disk",
      "export-size": 64 * MiB,
      contexts: ["base:allocation"],
      is_read_only: false,
      is_rotational: false,
      can_cache: true,
      can_df: true,
      can_fast_zero: true,
      can_flush: true,
      can_fua: true,
      can_multi_conn: true,
      can_trim: true,
      can_zero: true,
      block_size_minimum: 512,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });
  });

  it("shows a read-only export without write capabilities", async () => {
    const info = await nbdinfo([srv.uri("ro")]);
    expect(info.exports[0]).toMatchObject({
      "export-size": 8 * MiB,
      is_read_only: true,
      can_trim: false,
      can_zero: false,
      can_fua: false,
    });
  });

  it("lists every export with --list", async () => {
    const info = await nbdinfo(["--list", srv.uri("")]);
    expect(info.exports.map((e) => [e["export-name"], e["export-size"], e.is_read_only])).toEqual([
      ["disk", 64 * MiB, false],
      ["ro", 8 * MiB, true],
    ]);
    expect(info.exports[0]!.description).toBe("pagedisk test disk");
  });

  it("maps data and holes with --map, holes again after a TRIM", async () => {
    const device = srv.volumes.get("disk")!;
    await device.write(0, Buffer.alloc(4 * MiB, 0x5a));
    await runTool("qemu-io", ["-f", "raw", srv.uri("disk"), "-c", "discard 1M 1M"]);
    const { stdout } = await runTool("nbdinfo", ["--map", "--json", srv.uri("disk")]);
    const map = (JSON.parse(stdout) as { offset: number; length: number; type: number }[]).map(
      (e) => [e.offset, e.length, e.type],
    );
    expect(map).toEqual([
      [0, MiB, 0],
      [MiB, MiB, 3], // hole,zero
      [2 * MiB, 2 * MiB, 0],
      [4 * MiB, 60 * MiB, 3],
    ]);
  });

  it("fails with ERR_UNKNOWN for an export that does not exist", async () => {
    const r = await runTool("nbdinfo", [srv.uri("missing")], { allowFailure: true });
    expect(r.code).not.toBe(0);
    // libnbd reports NBD_REP_ERR_UNKNOWN as ENOENT.
    expect(r.stderr).toContain("No such file or directory for export: missing");
  });
});
