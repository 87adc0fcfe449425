/**
 * nbdcopy (libnbd) copies 256 MiB of random data into an export and back
 * out; the checksums must match. nbdcopy uses several connections when the
 * server allows multi-conn, so this also exercises CAN_MULTI_CONN.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTool } from "../harness/tools.ts";
import { type MemoryServer, serveMemory } from "./memory-server.ts";

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;

async function sha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

describe("nbdcopy", () => {
  let srv: MemoryServer;

  beforeAll(async () => {
    srv = await serveMemory({ disk: { size: SIZE } });
  });
  afterAll(() => srv.close());

  it("copies 256 MiB of random data in and back out unchanged, over several connections", async () => {
    const source = join(srv.dir, "source.img");
    const copy = join(srv.dir, "copy.img");
    const file = await open(source, "w");
    for (let at = 0; at < SIZE; at += 16 * MiB) await file.write(randomBytes(16 * MiB));
    await file.close();

    await runTool("nbdcopy", [source, srv.uri("disk")]);
    expect(srv.server.stats.peakConnections).toBeGreaterThan(1); // multi-conn was used
    expect(srv.server.stats.bytesWritten).toBe(SIZE);
    await runTool("nbdcopy", [srv.uri("disk"), copy]);

    const [a, b] = await Promise.all([sha256(source), sha256(copy)]);
    expect(b).toBe(a);
    expect(srv.server.stats.errors).toBe(0);
  });
});
