/**
 * qemu's own NBD client (qemu-img, qemu-io) against the in-process server.
 */
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTool } from "../harness/tools.ts";
import { type MemoryServer, serveMemory } from "./memory-server.ts";

const MiB = 1024 * 1024;

describe("qemu-img and qemu-io", () => {
  let srv: MemoryServer;

  beforeAll(async () => {
    srv = await serveMemory({ img: { size: 32 * MiB }, io: { size: 8 * MiB } });
  });
  afterAll(() => srv.close());

  it("converts raw -> nbd -> raw, and compares equal until a byte differs", async () => {
    // A sparse-ish image: random data regions separated by zeroes.
    const image = Buffer.alloc(32 * MiB);
    for (const at of [0, 5 * MiB + 4096, 17 * MiB, 31 * MiB]) randomBytes(MiB).copy(image, at);
    const src = join(srv.dir, "src.img");
    const back = join(srv.dir, "back.img");
    await writeFile(src, image);

    await runTool("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, srv.uri("img")]);
    const same = await runTool("qemu-img", [
      "compare",
      "-f",
      "raw",
      "-F",
      "raw",
      src,
      srv.uri("img"),
    ]);
    expect(same.stdout).toContain("Images are identical");

    await runTool("qemu-img", ["convert", "-f", "raw", "-O", "raw", srv.uri("img"), back]);
    expect((await readFile(back)).equals(image)).toBe(true);

    const device = srv.volumes.get("img")!;
    await device.write(17 * MiB, Buffer.alloc(512, 0xff));
    const differ = await runTool(
      "qemu-img",
      ["compare", "-f", "raw", "-F", "raw", src, srv.uri("img")],
      {
        allowFailure: true,
      },
    );
    expect(differ.code).toBe(1);
    expect(differ.stdout).toContain("Content mismatch at offset 17825792");
  });

  it("writes aligned and unaligned patterns, discards and zeroes, and verifies with qemu-io", async () => {
    const uri = srv.uri("io");
    await runTool("qemu-io", [
      "-f",
      "raw",
      uri,
      "-c",
      "write -P 0xab 0 64k",
      "-c",
      "read -P 0xab 0 64k",
      "-c",
      "write -P 0xcd 1000 3000", // unaligned: qemu read-modify-writes the 512-byte sectors
      "-c",
      "read -P 0xab 0 1000",
      "-c",
      "read -P 0xcd 1000 3000",
      "-c",
      "read -P 0xab 4000 61536",
      "-c",
      "write -P 0x11 1M 1M",
      "-c",
      "discard 1M 512k",
      "-c",
      "write -z 64k 64k",
      "-c",
      "read -P 0 64k 64k",
      "-c",
      "write -z -u 2M 256k", // zero with unmap allowed
      "-c",
      "read -P 0 2M 256k",
      "-c",
      "flush",
    ]);
    // A mismatch is an error exit: prove qemu-io would notice one.
    const wrong = await runTool("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x99 0 4k"], {
      allowFailure: true,
    });
    expect(wrong.code).not.toBe(0);

    const device = srv.devices.get("io")!;
    const got = Buffer.from(await device.read(0, 2 * MiB));
    const want = Buffer.alloc(2 * MiB);
    want.fill(0xab, 0, 64 * 1024);
    want.fill(0xcd, 1000, 4000);
    want.fill(0x11, MiB + 512 * 1024, 2 * MiB); // the half that was not discarded
    expect(got.subarray(0, 128 * 1024).equals(want.subarray(0, 128 * 1024))).toBe(true);
    expect(got.subarray(MiB + 512 * 1024).equals(want.subarray(MiB + 512 * 1024))).toBe(true);
    expect(srv.server.stats.errors).toBe(0);
  });
});
