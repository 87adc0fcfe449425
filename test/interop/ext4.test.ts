/**
 * A real ext4 on a pagedisk export: `pagedisk serve` (the bundled binary) ->
 * nbdfuse (libnbd-bin) exposes the export as a file -> a loop device turns it
 * into a kernel block device -> mkfs.ext4, mount, write, sync, unmount,
 * e2fsck -fn, remount and verify. This machine has no nbd kernel module, which
 * is exactly the fallback the agent uses too.
 */
import { type ChildProcess, execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { once } from "node:events";
import { mkdir, readFile, rm, watch, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServeProcess, startServe } from "../harness/serve.ts";
import { toolPath } from "../harness/tools.ts";

const exec = promisify(execFile);
/**
 * Resolves when `file` exists, woken by directory events rather than a
 * polling sleep; rejects if `proc` exits first (nbdfuse failing to mount).
 */
async function appears(file: string, proc: ChildProcess): Promise<void> {
  const stop = new AbortController();
  const watcher = watch(dirname(file), { signal: stop.signal });
  const exited = once(proc, "exit").then(([code]) => {
    throw new Error(`nbdfuse exited (${code}) before it was ready`);
  });
  const created = (async () => {
    // Checked after the watcher exists, so a file created in between is not missed.
    if (existsSync(file)) return;
    for await (const _ of watcher) if (existsSync(file)) return;
  })();
  try {
    await Promise.race([created, exited]);
  } finally {
    stop.abort();
    created.catch(() => {});
    exited.catch(() => {});
  }
}

describe("ext4 through nbdfuse and a loop device", () => {
  let serve: ServeProcess | undefined;
  let fuseDir = "";
  let loop = "";
  let fsDir = "";
  const files = new Map<string, string>();

  /** nbdfuse exposes the export as a file; losetup makes it a block device. */
  async function attach(): Promise<void> {
    const pidfile = join(serve!.dir, "nbdfuse.pid");
    await rm(pidfile, { force: true });
    const nbdfuse = execFile(toolPath("nbdfuse"), [
      "-P",
      pidfile,
      join(fuseDir, "disk"),
      serve!.uri,
    ]);
    await appears(pidfile, nbdfuse);
    const { stdout } = await exec(toolPath("losetup"), [
      "--find",
      "--show",
      join(fuseDir, "disk"),
    ]);
    loop = stdout.trim();
  }

  async function detach(): Promise<void> {
    await exec("umount", [fsDir]).catch(() => {});
    if (loop) await exec(toolPath("losetup"), ["-d", loop]).catch(() => {});
    loop = "";
    await exec(toolPath("fusermount3"), ["-u", fuseDir]).catch(() => {});
  }

  beforeAll(async () => {
    serve = await startServe("memory:256MiB", ["--export-name", "ext4"]);
    fuseDir = join(serve.dir, "fuse");
    fsDir = join(serve.dir, "fs");
    await mkdir(fuseDir);
    await mkdir(fsDir);
    await attach();
  });

  afterAll(async () => {
    if (fuseDir) await detach();
    if (serve) expect(await serve.stop()).toBe(0);
  });

  it("makes, fills, checks and remounts a filesystem", async () => {
    expect(loop).toMatch(/^\/dev\/loop\d+$/);
    await exec(toolPath("mkfs.ext4"), ["-q", "-F", loop]);
    await exec("mount", [loop, fsDir]);
    await mkdir(join(fsDir, "d"));
    for (let i = 0; i < 200; i++) {
      const data = randomBytes(1024 + ((i * 7919) % 65536));
      const name = join("d", `f${i}`);
      await writeFile(join(fsDir, name), data);
      files.set(name, createHash("sha256").update(data).digest("hex"));
    }
    const big = randomBytes(32 * 1024 * 1024);
    await writeFile(join(fsDir, "big"), big);
    files.set("big", createHash("sha256").update(big).digest("hex"));
    await exec("sync", []);
    await exec("umount", [fsDir]);

    // e2fsck -n is a read-only check; exit status 0 (no throw) means clean.
    const first = await exec(toolPath("e2fsck"), ["-fn", loop]);
    expect(first.stdout).toMatch(/\d+\/\d+ files/);

    // Tear the whole client side down and build it anew, so that what is
    // checked and read back can only come from the server.
    await detach();
    await attach();
    const fsck = await exec(toolPath("e2fsck"), ["-fn", loop]);
    expect(fsck.stdout).toMatch(/\d+\/\d+ files/);
    await exec("mount", [loop, fsDir]);
    for (const [name, sum] of files) {
      const back = await readFile(join(fsDir, name));
      expect(createHash("sha256").update(back).digest("hex"), name).toBe(sum);
    }
    await exec("umount", [fsDir]);
  });
});
