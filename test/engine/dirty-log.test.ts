import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DirtyLog, DirtyLogError, dirtyLogPath, removeStaleLogs } from "../../agent/engine/dirty-log.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("DirtyLog", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "dirty-log-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("creates the file 0600 in a new directory and keeps marks across a reopen", async () => {
    const path = dirtyLogPath(join(dir, "vol"), "r1", 7);
    const log = await DirtyLog.open(path, 64 * MiB, MiB);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(log.dirtyBytes).toBe(0);
    await log.mark(3 * MiB + 5, 10);
    await log.mark(10 * MiB, 2 * MiB + 1);
    await log.close();
    const again = await DirtyLog.find(path, 64 * MiB, MiB);
    expect(again).toBeDefined();
    expect([...again!.regions()]).toEqual([
      { offset: 3 * MiB, length: MiB },
      { offset: 10 * MiB, length: 3 * MiB },
    ]);
    expect(again!.dirtyBytes).toBe(4 * MiB);
    await again!.close();
  });

  it("merges adjacent granules and clips the last one to the size", async () => {
    const size = 10 * MiB + 512 * KiB;
    const log = await DirtyLog.open(join(dir, "a.1.bitmap"), size, MiB);
    await Promise.all([log.mark(0, MiB), log.mark(MiB, 1), log.mark(9 * MiB, 2 * MiB)]);
    expect([...log.regions()]).toEqual([
      { offset: 0, length: 2 * MiB },
      { offset: 9 * MiB, length: MiB + 512 * KiB },
    ]);
    expect(log.dirtyBytes).toBe(3 * MiB + 512 * KiB);
    await log.close();
  });

  it("finds regions far apart in a large, mostly clean map", async () => {
    const log = await DirtyLog.open(join(dir, "big.1.bitmap"), 8 * 1024 * 1024 * MiB, MiB);
    await log.mark(5 * MiB, 1);
    await log.mark(7 * 1024 * 1024 * MiB, 1);
    expect([...log.regions()].map((r) => r.offset)).toEqual([5 * MiB, 7 * 1024 * 1024 * MiB]);
    await log.close();
  });

  it("makes concurrent marks durable, each resolving only after its bits are on disk", async () => {
    const path = join(dir, "c.1.bitmap");
    const log = await DirtyLog.open(path, 256 * MiB, MiB);
    const marks = Array.from({ length: 50 }, (_, i) => log.mark(i * 5 * MiB, 1));
    // A mark of bits already pending must not resolve before they are written.
    const repeat = log.mark(0, 1);
    await Promise.all([...marks, repeat]);
    // Read it through a second handle: what is acknowledged is on disk.
    const other = await DirtyLog.find(path, 256 * MiB, MiB);
    expect([...other!.regions()]).toHaveLength(50);
    await other!.close();
    await log.close();
  });

  it("clear() forgets durably, remove() deletes the file", async () => {
    const path = join(dir, "d.1.bitmap");
    const log = await DirtyLog.open(path, 16 * MiB, MiB);
    await log.mark(0, 16 * MiB);
    await log.clear();
    expect(log.dirtyBytes).toBe(0);
    await log.close();
    const again = (await DirtyLog.find(path, 16 * MiB, MiB))!;
    expect([...again.regions()]).toEqual([]);
    await again.remove();
    expect(await DirtyLog.find(path, 16 * MiB, MiB)).toBeUndefined();
    await expect(again.mark(0, 1)).rejects.toBeInstanceOf(DirtyLogError);
  });

  it("reads a log written for another size or granularity, or torn, as all dirty", async () => {
    const path = join(dir, "e.1.bitmap");
    const log = await DirtyLog.open(path, 16 * MiB, MiB);
    await log.mark(0, 1);
    await log.close();
    const resized = (await DirtyLog.find(path, 32 * MiB, MiB))!;
    expect(resized.dirtyBytes).toBe(32 * MiB);
    await resized.close();
    await writeFile(path, "garbage");
    const torn = (await DirtyLog.find(path, 8 * MiB, 2 * MiB))!;
    expect([...torn.regions()]).toEqual([{ offset: 0, length: 8 * MiB }]);
    await torn.close();
  });

  it("refuses a granularity that is not a power of two of at least 64 KiB, creating nothing", async () => {
    const path = join(dir, "f.1.bitmap");
    await expect(DirtyLog.open(path, 16 * MiB, 4 * KiB)).rejects.toThrow(/granularity/);
    await expect(DirtyLog.open(path, 16 * MiB, 3 * 64 * KiB)).rejects.toThrow(/granularity/);
    expect(await readdir(dir)).toEqual([]);
  });

  it("removes the logs of older epochs only", async () => {
    for (const name of ["r1.3.bitmap", "r1.4.bitmap", "r2.5.bitmap", "r2.6.bitmap", "notes.txt"]) {
      await writeFile(join(dir, name), "");
    }
    expect((await removeStaleLogs(dir, 5)).sort()).toEqual(["r1.3.bitmap", "r1.4.bitmap"]);
    expect((await readdir(dir)).sort()).toEqual(["notes.txt", "r2.5.bitmap", "r2.6.bitmap"]);
    expect(await removeStaleLogs(join(dir, "absent"), 5)).toEqual([]);
  });
});
