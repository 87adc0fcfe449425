/**
 * fio's nbd engine (libnbd) with crc32c verification over mixed block sizes
 * and queue depth > 1, on one connection and on two at once.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTool } from "../harness/tools.ts";
import { type MemoryServer, serveMemory } from "./memory-server.ts";

const MiB = 1024 * 1024;

interface FioJob {
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

/** Random writes of mixed sizes, then fio reads every block back and checks its crc32c. */
async function verifiedRun(
  srv: MemoryServer,
  name: string,
  offset: number,
  size: number,
): Promise<FioJob> {
  const output = join(srv.dir, `${name}.json`);
  await runTool("fio", [
    `--name=${name}`,
    "--ioengine=nbd",
    `--uri=${srv.uri("disk")}`,
    "--rw=randwrite",
    "--bssplit=4k/40:16k/20:64k/20:1m/20",
    "--iodepth=16",
    `--offset=${offset}`,
    `--size=${size}`,
    "--verify=crc32c",
    "--do_verify=1",
    "--verify_fatal=1",
    // fio otherwise leaves *-verify.state files in the working directory.
    "--verify_state_save=0",
    "--output-format=json",
    `--output=${output}`,
  ]);
  const report = JSON.parse(await readFile(output, "utf8")) as { jobs: FioJob[] };
  return report.jobs[0]!;
}

describe("fio nbd engine", () => {
  let srv: MemoryServer;

  beforeAll(async () => {
    srv = await serveMemory({ disk: { size: 128 * MiB } });
  });
  afterAll(() => srv.close());

  it("verifies crc32c over mixed block sizes at queue depth 16", async () => {
    const job = await verifiedRun(srv, "mixed", 0, 48 * MiB);
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(48 * MiB);
    expect(job.read.io_bytes).toBe(48 * MiB); // the verify pass read everything back
    expect(srv.server.stats.errors).toBe(0);
  });

  it("serves two clients writing disjoint regions at once, both verifying", async () => {
    const before = srv.server.stats.accepted;
    const [a, b] = await Promise.all([
      verifiedRun(srv, "left", 64 * MiB, 32 * MiB),
      verifiedRun(srv, "right", 96 * MiB, 32 * MiB),
    ]);
    for (const job of [a, b]) {
      expect(job.error).toBe(0);
      expect(job.read.io_bytes).toBe(32 * MiB);
    }
    // fio opens one connection per job to size the export, then one to run it.
    expect(srv.server.stats.accepted - before).toBeGreaterThanOrEqual(2);
    expect(srv.server.stats.errors).toBe(0);
  });
});
