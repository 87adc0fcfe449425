/**
 * The replica layer over memory members: fan-out, offline transitions with
 * durable dirty marks, failover, the last-member and LeaseLost rules, resync
 * and rebuild while a client keeps writing. A member that fails on purpose
 * is a FaultyDevice (fixtures.ts) rejecting with real StorageErrors.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DirtyLog, dirtyLogPath } from "../../agent/engine/dirty-log.ts";
import type { VolumeFailedEvent } from "../../agent/engine/failure.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import {
  openReplicatedVolume,
  ReplicaError,
  type ReplicaFailure,
  type ReplicaOptions,
  type ReplicatedVolume,
} from "../../agent/engine/replicas.ts";
import type { VolumeOptions } from "../../agent/engine/volume.ts";
import { BlockError, type BlockDevice } from "../../agent/nbd/device.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { type Call, FaultyDevice, GatedDevice, ProbeDevice, settle, watch } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 32 * MiB;
const GRAIN = 64 * KiB;
const EPOCH = 3;

const blobGone = () => new StorageError("BlobGone", "BlobNotFound", { status: 404, azureCode: "BlobNotFound" });
const forbidden = () => new StorageError("Forbidden", "AuthenticationFailed", { status: 403 });
const leaseLost = () => new StorageError("LeaseLost", "LeaseIdMismatchWithBlobOperation", { status: 412 });
const mutating = (c: Call) => c.op === "write" || c.op === "trim" || c.op === "writeZeroes";

/** A memory device that outlives the volume's close, as a blob outlives the agent. */
class Persistent extends ProbeDevice {
  override close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A device whose allocation answers wait on `hold` while it is set, as a slow Get Page Ranges does. */
class HeldAllocation extends Persistent {
  hold: Promise<void> | undefined;
  asked = 0;
  #asked: () => void = () => {};
  /** Resolves when the next allocation question is held. */
  readonly whenAsked = (): Promise<void> => new Promise((resolve) => (this.#asked = resolve));
  protected override handle<T>(call: Call, run: () => Promise<T>): Promise<T> {
    if (call.op !== "blockStatus" || !this.hold) return super.handle(call, run);
    this.asked++;
    this.#asked();
    return this.hold.then(() => super.handle(call, run));
  }
}

function memory(): MemoryBackend {
  return new MemoryBackend({ size: SIZE, chunkSize: 64 * KiB });
}

/** Every byte of two devices, compared in 4 MiB pieces. */
async function sameBytes(a: BlockDevice, b: BlockDevice): Promise<boolean> {
  for (let at = 0; at < a.size; at += 4 * MiB) {
    const x = Buffer.from(await a.read(at, 4 * MiB));
    const y = Buffer.from(await b.read(at, 4 * MiB));
    if (!x.equals(y)) return false;
  }
  return true;
}

/** Allocated bytes by blockStatus. */
async function allocated(dev: BlockDevice): Promise<number> {
  let n = 0;
  for (const e of await dev.blockStatus(0, dev.size)) if (!e.hole) n += e.length;
  return n;
}

describe("openReplicatedVolume over memory members", () => {
  let dir: string;
  let mems: MemoryBackend[];
  let faulty: FaultyDevice[];
  let failures: ReplicaFailure[];
  let failed: VolumeFailedEvent[];
  let offlineCalls: Array<[string, string[]]>;
  let onlineCalls: Array<[string, string[]]>;
  let vol: ReplicatedVolume | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "replicas-"));
    mems = [memory(), memory(), memory()];
    faulty = mems.map((m) => new FaultyDevice(new Persistent(m)));
    failures = [];
    failed = [];
    offlineCalls = [];
    onlineCalls = [];
  });
  afterEach(async () => {
    await vol?.close().catch(() => {});
    vol = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  function options(extra: Partial<ReplicaOptions & VolumeOptions> = {}): ReplicaOptions & VolumeOptions {
    return {
      dirtyLog: { dir, epoch: EPOCH, granularity: GRAIN },
      onFailure: (f) => failures.push(f),
      onFailed: (e) => failed.push(e),
      markOffline: async (id, online) => {
        offlineCalls.push([id, online]);
      },
      markOnline: async (id, online) => {
        onlineCalls.push([id, online]);
      },
      ...extra,
    };
  }

  async function open(n = 2, extra: Partial<ReplicaOptions & VolumeOptions> = {}): Promise<ReplicatedVolume> {
    vol = await openReplicatedVolume(
      faulty.slice(0, n).map((d, i) => ({ id: `r${i}`, pool: `pool${i}`, device: d })),
      options(extra),
    );
    return vol;
  }

  it("lands writes, trims and zeroes on every member, byte-equal", async () => {
    const v = await open(3);
    await v.write(1234, pattern(1, 300 * KiB));
    await v.write(5 * MiB, pattern(2, 9 * MiB));
    await v.trim(6 * MiB, 1 * MiB);
    await v.writeZeroes(8 * MiB + 512, 4096);
    await v.flush();
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
    expect(await sameBytes(mems[0]!, mems[2]!)).toBe(true);
    expect(Buffer.from(await mems[2]!.read(5 * MiB, 512)).equals(pattern(2, 512))).toBe(true);
    expect(v.replicas().map((r) => r.state)).toEqual(["ONLINE", "ONLINE", "ONLINE"]);
    const m = v.metrics();
    expect(m.backend.bytesWritten).toBeGreaterThanOrEqual(3 * (300 * KiB + 9 * MiB));
    expect(failures).toEqual([]);
  });

  it("takes a failing member offline without the client noticing, and marks its log durably once", async () => {
    const v = await open(2);
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    const writes = [0, 1, 2, 3].map((i) => v.write(i * 2 * MiB, pattern(10 + i, 64 * KiB)));
    await Promise.all(writes);
    await v.trim(20 * MiB, 128 * KiB);
    expect(failures).toEqual([
      expect.objectContaining({ replica: "r1", pool: "pool1", code: "BlobGone", status: 404, azureCode: "BlobNotFound" }),
    ]);
    // One hook call for the batch, naming the survivors.
    expect(offlineCalls).toEqual([["r1", ["r0"]]]);
    const status = v.replicas();
    expect(status.map((r) => [r.id, r.state])).toEqual([
      ["r0", "ONLINE"],
      ["r1", "OFFLINE"],
    ]);
    expect(status[1]!.dirtyBytes).toBe(6 * GRAIN);
    expect(status[1]!.error).toMatch(/BlobNotFound/);
    // Later writes skip it: nothing more reaches its device.
    const before = faulty[1]!.calls.length;
    await v.write(30 * MiB, pattern(20, 4096));
    expect(faulty[1]!.calls.length).toBe(before);
    // What was acknowledged is on disk (another handle sees it).
    const log = (await DirtyLog.find(dirtyLogPath(dir, "r1", EPOCH), SIZE, GRAIN))!;
    expect([...log.regions()]).toEqual([
      { offset: 0, length: GRAIN },
      { offset: 2 * MiB, length: GRAIN },
      { offset: 4 * MiB, length: GRAIN },
      { offset: 6 * MiB, length: GRAIN },
      { offset: 20 * MiB, length: 2 * GRAIN },
      { offset: 30 * MiB, length: GRAIN },
    ]);
    await log.close();
    expect(Buffer.from(await v.read(2 * MiB, 64 * KiB)).equals(pattern(11, 64 * KiB))).toBe(true);
  });

  it("takes a member offline when its retries pass the replica deadline", async () => {
    const v = await open(2, { replicaDeadlineMs: 0 });
    faulty[0]!.plan = (c) => (c.op === "write" ? new StorageError("Transient", "reset", { status: 0 }) : undefined);
    await v.write(0, pattern(1, 4096));
    expect(failures.map((f) => [f.replica, f.code])).toEqual([["r0", "Transient"]]);
    expect(v.replicas()[0]!.state).toBe("OFFLINE");
    // Reads now go to the next ONLINE member.
    expect(Buffer.from(await v.read(0, 4096)).equals(pattern(1, 4096))).toBe(true);
  });

  it("fails the volume (EIO) when the last ONLINE member fails", async () => {
    const v = await open(2);
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    await v.write(0, pattern(1, 4096));
    faulty[0]!.plan = (c) => (mutating(c) ? forbidden() : undefined);
    await expect(v.write(MiB, pattern(2, 4096))).rejects.toMatchObject({ errno: "EIO" });
    expect(failed).toEqual([expect.objectContaining({ reason: "forbidden", status: 403 })]);
    await expect(v.read(0, 4096)).rejects.toBeInstanceOf(BlockError);
    expect(v.replicas()[0]!.state).toBe("ONLINE");
  });

  it("fails a volume of one member as a single backend does: blob gone, then EIO for everything", async () => {
    const v = await open(1);
    await v.write(0, pattern(1, 4096));
    await v.flush();
    faulty[0]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    await expect(v.write(MiB, pattern(2, 4096))).rejects.toMatchObject({ errno: "EIO" });
    expect(failed).toEqual([expect.objectContaining({ reason: "blob-gone", status: 404 })]);
    expect(failures).toEqual([]);
    await expect(v.flush()).rejects.toMatchObject({ errno: "EIO" });
    expect(v.replicas()).toEqual([{ id: "r0", pool: "pool0", state: "ONLINE", dirtyBytes: 0 }]);
  });

  it("fails the volume when the secondary loses its lease", async () => {
    const v = await open(2);
    faulty[1]!.plan = (c) => (c.op === "write" ? leaseLost() : undefined);
    await expect(v.write(0, pattern(1, 4096))).rejects.toMatchObject({ errno: "EIO" });
    expect(failed).toEqual([expect.objectContaining({ reason: "lease-lost", status: 412 })]);
    expect(failures).toEqual([]);
    const calls = faulty[0]!.calls.length;
    await expect(v.write(MiB, pattern(2, 4096))).rejects.toMatchObject({ errno: "EIO" });
    expect(faulty[0]!.calls.length).toBe(calls);
    // The first write reached r0 and not r1: they may differ, and the volume says so.
    expect(v.diverged).toBe(true);
  });

  it("does not call the replicas diverged when a lost lease stopped a write on all of them", async () => {
    const v = await open(2);
    for (const f of faulty.slice(0, 2)) f.plan = (c) => (c.op === "write" ? leaseLost() : undefined);
    await expect(v.write(0, pattern(1, 4096))).rejects.toMatchObject({ errno: "EIO" });
    expect(failed).toHaveLength(1);
    expect(v.diverged).toBe(false);
  });

  it("fails reads over to the next ONLINE member", async () => {
    const v = await open(3, { sparse: false });
    await v.write(MiB, pattern(5, 128 * KiB));
    faulty[0]!.plan = (c) => (c.op === "read" ? forbidden() : undefined);
    expect(Buffer.from(await v.read(MiB, 128 * KiB)).equals(pattern(5, 128 * KiB))).toBe(true);
    expect(v.replicas().map((r) => r.state)).toEqual(["OFFLINE", "ONLINE", "ONLINE"]);
    expect(failures.map((f) => f.replica)).toEqual(["r0"]);
    expect(faulty[1]!.of("read")).toHaveLength(1);
  });

  it("holds a write's acknowledgement until the markOffline hook resolves", async () => {
    let release!: () => void;
    const hookDone = new Promise<void>((r) => (release = r));
    const v = await open(2, { markOffline: () => hookDone });
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    const w = watch(v.write(0, pattern(1, 4096)));
    for (let i = 0; i < 5; i++) await settle();
    expect(w.settled).toBe(false);
    release();
    await w.promise;
    expect(v.replicas()[1]!.state).toBe("OFFLINE");
  });

  it("fails the write, unacknowledged, when the hook fails, and calls it again for the next one", async () => {
    let calls = 0;
    const v = await open(2, {
      markOffline: async () => {
        if (++calls === 1) throw new StorageError("Transient", "metadata write failed");
      },
    });
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    await expect(v.write(0, pattern(1, 4096))).rejects.toMatchObject({ errno: "EIO" });
    await v.write(MiB, pattern(2, 4096));
    expect(calls).toBe(2);
    expect(v.metrics().failed).toBe(false);
  });

  it("resyncs only the dirty regions while a client keeps writing, and ends byte-equal", async () => {
    const v = await open(2);
    await v.write(0, pattern(1, 8 * MiB));
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    await v.write(1 * MiB, pattern(2, 200 * KiB));
    await v.write(6 * MiB + 512, pattern(3, 4096));
    await v.trim(3 * MiB, 2 * GRAIN);
    await v.write(20 * MiB, pattern(4, 1 * MiB));
    const dirty = v.replicas()[1]!.dirtyBytes;
    expect(dirty).toBe(4 * GRAIN + 1 * GRAIN + 2 * GRAIN + 1 * MiB);
    faulty[1]!.plan = () => undefined;
    expect(onlineCalls).toEqual([]);
    let done = false;
    const resync = v.resync("r1").finally(() => (done = true));
    expect(v.replicas()[1]!.state).toBe("RESYNCING");
    // A writer inside and outside the dirty regions for as long as the resync runs.
    let writes = 0;
    for (let i = 0; !done; i++) {
      await v.write(((i * 7) % 24) * MiB + 4096, pattern(100 + i, 64 * KiB));
      writes++;
      // Memory members answer in microtasks: let the copy's file I/O in between.
      await settle();
    }
    await resync;
    expect(writes).toBeGreaterThan(0);
    const status = v.replicas()[1]!;
    expect(status).toMatchObject({ state: "ONLINE", dirtyBytes: 0 });
    expect(onlineCalls).toEqual([["r1", ["r0", "r1"]]]);
    const stats = v.metrics().replication;
    // Copied plus cleared is the dirty set, not the volume.
    expect(stats.copiedBytes + stats.clearedBytes).toBe(dirty);
    expect(stats.clearedBytes).toBe(2 * GRAIN);
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
    expect(await readdir(dir)).toEqual([]);
    // Both serve from now on.
    await v.write(0, pattern(9, 4096));
    expect(Buffer.from(await mems[1]!.read(0, 4096)).equals(pattern(9, 4096))).toBe(true);
  });

  it("rebuilds a new member from the allocated ranges only, keeping holes", async () => {
    const v = await open(2);
    await v.write(2 * MiB, pattern(1, 3 * MiB));
    await v.write(17 * MiB, pattern(2, 100 * KiB));
    const fresh = memory();
    let done = false;
    const rebuild = v.rebuild({ id: "r9", pool: "pool9", device: fresh }).finally(() => (done = true));
    expect(v.replicas()[2]).toMatchObject({ id: "r9", state: "REBUILDING", dirtyBytes: 0 });
    for (let i = 0; !done; i++) {
      await v.write(((i * 5) % 30) * MiB, pattern(50 + i, 8 * KiB));
      await settle();
    }
    await rebuild;
    expect(v.replicas()[2]!.state).toBe("ONLINE");
    const stats = v.metrics().replication;
    expect(stats.clearedBytes).toBe(0);
    expect(stats.copiedBytes).toBeLessThanOrEqual(await allocated(mems[0]!));
    expect(stats.copiedBytes).toBeGreaterThanOrEqual(3 * MiB + 100 * KiB);
    expect(await sameBytes(mems[0]!, fresh)).toBe(true);
    expect(await fresh.blockStatus(0, SIZE)).toEqual(await mems[0]!.blockStatus(0, SIZE));
    expect(onlineCalls).toEqual([["r9", ["r0", "r1", "r9"]]]);
  });

  it("reports a copy at 0 percent until its plan exists, not 100", async () => {
    const source = new HeldAllocation(mems[0]!);
    vol = await openReplicatedVolume([{ id: "r0", pool: "pool0", device: source }], options());
    await vol.write(0, pattern(3, 2 * MiB));
    let answer!: () => void;
    source.hold = new Promise((resolve) => (answer = resolve));
    const fresh = memory();
    const asked = source.whenAsked();
    const rebuild = vol.rebuild({ id: "r9", pool: "pool9", device: fresh });
    await asked;
    // The source's allocation answer is held: nothing is planned, nothing copied.
    expect(source.asked).toBe(1);
    expect(vol.replicas()[1]).toMatchObject({ id: "r9", state: "REBUILDING", progress: 0, copiedBytes: 0 });
    answer();
    await rebuild;
    expect(vol.replicas()[1]).toEqual({ id: "r9", pool: "pool9", state: "ONLINE", dirtyBytes: 0 });
    expect(await sameBytes(mems[0]!, fresh)).toBe(true);
  });

  it("clears on a rebuild's target what an earlier attempt left where the source is now a hole, and only that", async () => {
    const v = await open(1);
    await v.write(0, pattern(1, 2 * MiB));
    // An interrupted rebuild copied 8 MiB..10 MiB; the source then zeroed it, and 4 MiB more the target never had.
    const stale = memory();
    await stale.write(0, pattern(1, 2 * MiB));
    await stale.write(8 * MiB, pattern(2, 2 * MiB));
    await v.writeZeroes(8 * MiB, 6 * MiB);
    await v.rebuild({ id: "r9", pool: "pool9", device: stale });
    expect(await sameBytes(mems[0]!, stale)).toBe(true);
    expect(await stale.blockStatus(0, SIZE)).toEqual(await mems[0]!.blockStatus(0, SIZE));
    expect(v.metrics().replication).toMatchObject({ copiedBytes: 2 * MiB, clearedBytes: 2 * MiB });
  });

  it("resyncs a member opened offline without a log in full, clearing stale data in the source's holes", async () => {
    await mems[1]!.write(10 * MiB, pattern(7, 1 * MiB));
    await mems[0]!.write(0, pattern(8, 2 * MiB));
    const v = await open(2, { offline: ["r1"] });
    // No log says what it missed: no dirty bytes to show, only a full copy brings it back.
    expect(v.replicas()[1]).toMatchObject({ state: "OFFLINE" });
    expect(v.replicas()[1]).not.toHaveProperty("dirtyBytes");
    expect(offlineCalls).toEqual([]);
    await v.resync("r1");
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
    expect(await allocated(mems[1]!)).toBe(2 * MiB);
    expect(v.metrics().replication.copiedBytes).toBe(2 * MiB);
  });

  it("keeps the log across a restart: the member comes back OFFLINE and is resynced from it", async () => {
    const v = await open(2);
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    await v.write(4 * MiB, pattern(1, 256 * KiB));
    await v.close();
    vol = undefined;
    faulty[1]!.plan = () => undefined;
    offlineCalls = [];
    // Reopened as if after a crash before the control plane heard: the log alone says offline.
    const again = await open(2);
    expect(again.replicas()[1]).toMatchObject({ state: "OFFLINE", dirtyBytes: 256 * KiB });
    expect(offlineCalls).toEqual([["r1", ["r0"]]]);
    await again.resync("r1");
    expect(again.metrics().replication.copiedBytes).toBe(256 * KiB);
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
  });

  it("drops logs of older epochs at open", async () => {
    await writeFile(join(dir, "r1.2.bitmap"), "old");
    const v = await open(2);
    expect(v.replicas()[1]!.state).toBe("ONLINE");
    expect(await readdir(dir)).toEqual([]);
  });

  it("sends a member that fails during a rebuild back OFFLINE, untracked, and rejects the rebuild", async () => {
    const v = await open(1);
    await v.write(0, pattern(1, 8 * MiB));
    const target = new FaultyDevice(memory(), (c) => (c.op === "write" && c.offset >= 4 * MiB ? blobGone() : undefined));
    await expect(v.rebuild({ id: "r5", pool: "p5", device: target })).rejects.toMatchObject({ code: "CopyFailed" });
    expect(v.replicas()[1]).toMatchObject({ id: "r5", state: "OFFLINE" });
    expect(v.replicas()[1]).not.toHaveProperty("dirtyBytes");
    expect(failures.map((f) => f.replica)).toEqual(["r5"]);
    // Untracked: later writes leave no log; a new rebuild starts over.
    await v.write(0, pattern(2, 4096));
    expect(await readdir(dir)).toEqual([]);
    target.plan = () => undefined;
    await v.rebuild({ id: "r5", pool: "p5", device: target });
    expect(v.replicas()[1]!.state).toBe("ONLINE");
  });

  it("lets a client write into a window being copied land after the copy, never overwritten", async () => {
    const v = await open(2, { copyChunkBytes: 1 * MiB, copyConcurrency: 1 });
    await v.write(0, pattern(1, 4 * MiB));
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    await v.write(0, pattern(2, 4 * MiB));
    faulty[1]!.plan = () => undefined;
    // Hold the copy's first source read so a client write arrives while the window is locked.
    let releaseRead!: () => void;
    const readHeld = new Promise<void>((r) => (releaseRead = r));
    let copyReads = 0;
    faulty[0]!.plan = () => undefined;
    const gate = faulty[0]!;
    const origRead = gate.read.bind(gate);
    gate.read = async (offset, length, into) => {
      if (copyReads++ === 0) await readHeld;
      return origRead(offset, length, into);
    };
    const resync = v.resync("r1");
    for (let i = 0; i < 5 && copyReads === 0; i++) await settle();
    expect(copyReads).toBe(1);
    const w = watch(v.write(512 * KiB, pattern(3, 4096)));
    for (let i = 0; i < 5; i++) await settle();
    expect(w.settled).toBe(false);
    releaseRead();
    await w.promise;
    await resync;
    expect(Buffer.from(await mems[1]!.read(512 * KiB, 4096)).equals(pattern(3, 4096))).toBe(true);
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
  });

  it("resumes a rebuild stopped by the volume's close from its checkpoint, at the same epoch", async () => {
    const copy = { copyChunkBytes: 1 * MiB, copyConcurrency: 1 };
    let v = await open(1, copy);
    await v.write(0, pattern(1, 8 * MiB));
    const fresh = memory();
    const gated = new GatedDevice(new Persistent(fresh));
    const rebuild = v.rebuild({ id: "r9", pool: "pool9", device: gated }).catch((err: unknown) => err);
    // Three 1 MiB windows land; the volume closes (the agent stops) while the fourth is held.
    for (let done = 0; done < 3; done++) {
      await gated.whenHeld();
      await gated.held[0]!.release();
    }
    await gated.whenHeld();
    expect(gated.held).toHaveLength(1);
    const closing = v.close();
    for (const g of gated.held.splice(0)) g.fail(new Error("stopped"));
    await closing;
    expect(await rebuild).toBeInstanceOf(ReplicaError);
    vol = undefined;
    expect(await readFile(join(dir, `r9.${EPOCH}.copied`), "utf8")).toBe(String(3 * MiB));

    // The same epoch again: only what is left is copied.
    v = await open(1, copy);
    await v.rebuild({ id: "r9", pool: "pool9", device: new Persistent(fresh) });
    expect(v.metrics().replication.copiedBytes).toBe(5 * MiB);
    expect(await sameBytes(mems[0]!, fresh)).toBe(true);
    expect(await readdir(dir)).not.toContain(`r9.${EPOCH}.copied`);
  });

  it("leaves no older checkpoint behind when a copy that starts over stops before its first window", async () => {
    const v = await open(1, { copyChunkBytes: 1 * MiB, copyConcurrency: 1 });
    await v.write(0, pattern(1, 4 * MiB));
    await writeFile(join(dir, `r9.${EPOCH}.copied`), String(2 * MiB));
    const gated = new GatedDevice(new Persistent(memory()));
    const rebuild = v.rebuild({ id: "r9", pool: "pool9", device: gated }).catch((err: unknown) => err);
    await gated.whenHeld();
    const closing = v.close();
    for (const g of gated.held.splice(0)) g.fail(new Error("stopped"));
    await closing;
    expect(await rebuild).toBeInstanceOf(ReplicaError);
    vol = undefined;
    expect(await readdir(dir)).not.toContain(`r9.${EPOCH}.copied`);
  });

  it.each([
    ["after an unclean stop", { resumeCopies: false }, false],
    ["after a write since open, which the target missed", {}, true],
  ] as const)("starts a full copy over %s, and drops its checkpoint", async (_why, extra, writeFirst) => {
    await mems[0]!.write(0, pattern(1, 4 * MiB));
    const v = await open(1, { copyChunkBytes: 1 * MiB, ...extra });
    if (writeFirst) await v.write(0, pattern(2, 4096));
    await writeFile(join(dir, `r9.${EPOCH}.copied`), String(2 * MiB));
    const fresh = memory();
    await v.rebuild({ id: "r9", pool: "pool9", device: fresh });
    expect(v.metrics().replication.copiedBytes).toBe(4 * MiB);
    expect(await sameBytes(mems[0]!, fresh)).toBe(true);
    expect(await readdir(dir)).not.toContain(`r9.${EPOCH}.copied`);
  });

  it("removes members but never the last ONLINE one, and is idempotent for resync", async () => {
    const v = await open(2);
    faulty[1]!.plan = (c) => (mutating(c) ? blobGone() : undefined);
    await v.write(0, pattern(1, 4096));
    await expect(v.remove("r0")).rejects.toMatchObject({ code: "LastOnlineReplica" });
    await expect(v.resync("nope")).rejects.toMatchObject({ code: "UnknownReplica" });
    faulty[1]!.plan = () => undefined;
    const a = v.resync("r1");
    expect(v.resync("r1")).toBe(a);
    await a;
    await v.resync("r1");
    await v.remove("r1");
    expect(v.replicas().map((r) => r.id)).toEqual(["r0"]);
    const before = faulty[1]!.calls.length;
    await v.write(0, pattern(2, 4096));
    expect(faulty[1]!.calls.length).toBe(before);
    await v.remove("r1");
  });

  it("adds by a full resync a replica it never had, clearing stale data in the source's holes", async () => {
    // The old blob of r1: stale data where r0 has a hole, and a region r0 has too (outdated).
    await mems[1]!.write(10 * MiB, pattern(7, 1 * MiB));
    await mems[1]!.write(0, pattern(6, 64 * KiB));
    const v = await open(1);
    await v.write(0, pattern(8, 2 * MiB));
    await expect(v.resync("r1")).rejects.toMatchObject({ code: "UnknownReplica" });
    const small = new MemoryBackend({ size: SIZE / 2 });
    await expect(v.resync({ id: "r1", pool: "pool1", device: small })).rejects.toMatchObject({ code: "SizeMismatch" });
    expect(v.replicas().map((r) => r.id)).toEqual(["r0"]);

    let done = false;
    const resync = v.resync({ id: "r1", pool: "pool1", device: faulty[1]! }).finally(() => (done = true));
    expect(v.replicas()[1]).toMatchObject({ id: "r1", pool: "pool1", state: "RESYNCING" });
    let writes = 0;
    for (let i = 0; !done; i++) {
      await v.write(((i * 3) % 20) * MiB, pattern(30 + i, 16 * KiB));
      writes++;
      await settle();
    }
    await resync;
    expect(writes).toBeGreaterThan(0);
    expect(v.replicas().map((r) => [r.id, r.state])).toEqual([
      ["r0", "ONLINE"],
      ["r1", "ONLINE"],
    ]);
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
    expect(await mems[1]!.blockStatus(0, SIZE)).toEqual(await mems[0]!.blockStatus(0, SIZE));
    const stats = v.metrics().replication;
    expect(stats).toMatchObject({ resyncs: 1, rebuilds: 0 });
    expect(stats.clearedBytes).toBeGreaterThan(0);
    expect(onlineCalls).toEqual([["r1", ["r0", "r1"]]]);
    // A full member from now on: writes reach it.
    await v.write(12 * MiB, pattern(9, 4096));
    expect(Buffer.from(await mems[1]!.read(12 * MiB, 4096)).equals(pattern(9, 4096))).toBe(true);
  });

  it("stops writing a member the control plane puts OFFLINE: marked, logged dirty, no failure reported", async () => {
    const v = await open(2);
    await v.write(0, pattern(1, 1 * MiB));
    await v.takeOffline("r1");
    expect(offlineCalls).toEqual([["r1", ["r0"]]]);
    expect(failures).toEqual([]);
    expect(v.replicas()[1]).toMatchObject({ state: "OFFLINE", dirtyBytes: 0, error: "taken offline by the control plane" });
    const before = faulty[1]!.calls.length;
    await v.write(4 * MiB, pattern(2, 4096));
    await v.trim(8 * MiB, GRAIN);
    expect(faulty[1]!.calls.length).toBe(before);
    expect(v.replicas()[1]!.dirtyBytes).toBe(2 * GRAIN);
    // Idempotent; never the last ONLINE one; unknown ids refused.
    await v.takeOffline("r1");
    expect(offlineCalls).toHaveLength(1);
    await expect(v.takeOffline("r0")).rejects.toMatchObject({ code: "LastOnlineReplica" });
    await expect(v.takeOffline("nope")).rejects.toMatchObject({ code: "UnknownReplica" });
    expect(v.replicas()[0]!.state).toBe("ONLINE");
    // A dirty resync brings it back: only what it missed is copied.
    await v.resync("r1");
    expect(v.metrics().replication.copiedBytes + v.metrics().replication.clearedBytes).toBe(2 * GRAIN);
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
  });

  it("stops a copy onto a member the control plane puts OFFLINE", async () => {
    const v = await open(1);
    await v.write(0, pattern(1, 8 * MiB));
    const target = new GatedDevice(memory());
    const rebuild = v.rebuild({ id: "r9", pool: "pool9", device: target });
    await target.whenHeld();
    await v.takeOffline("r9");
    expect(v.replicas()[1]).toMatchObject({ id: "r9", state: "OFFLINE", error: "taken offline by the control plane" });
    // The copy's requests already at the device finish; it goes no further.
    await target.releaseAll();
    await expect(rebuild).rejects.toMatchObject({ code: "CopyFailed" });
    expect(target.held).toEqual([]);
    // A full copy cut short leaves unknown gaps: no log, a full copy again.
    expect(v.replicas()[1]).not.toHaveProperty("dirtyBytes");
    expect(failures).toEqual([]);
    const calls = target.calls.length;
    await v.write(0, pattern(2, 4096));
    expect(target.calls.length).toBe(calls);
  });

  it("keeps no dirty log for a member the control plane distrusts: only a full copy brings it back", async () => {
    const v = await open(2);
    await v.write(0, pattern(1, 2 * MiB));
    // Offline first as any other (its log starts), then distrusted: the log goes, from disk too.
    await v.takeOffline("r1");
    await v.write(4 * MiB, pattern(2, 64 * KiB));
    expect(v.replicas()[1]).toMatchObject({ state: "OFFLINE", dirtyBytes: 64 * KiB });
    expect(await readdir(dir)).toContain(`r1.${EPOCH}.bitmap`);
    await v.takeOffline("r1", { distrust: true });
    expect(v.replicas()[1]).not.toHaveProperty("dirtyBytes");
    expect(await readdir(dir)).not.toContain(`r1.${EPOCH}.bitmap`);
    await v.write(6 * MiB, pattern(3, 64 * KiB));
    await v.resync("r1");
    // Everything allocated, not the 128 KiB written while it was offline.
    expect(v.metrics().replication.copiedBytes).toBe(2 * MiB + 128 * KiB);
    expect(await sameBytes(mems[0]!, mems[1]!)).toBe(true);
  });

  it("names the replica and its pool in a member's throttle events", async () => {
    const events: Array<Record<string, unknown>> = [];
    const v = await open(2, {
      onEvent: (e) => events.push({ ...e }),
      throttle: { pauseMs: 1, maxPauseMs: 1, jitter: 0 },
    });
    faulty[1]!.plan = (c, i) =>
      c.op === "write" && i < 3 ? new StorageError("Throttled", "ServerBusy", { status: 503, azureCode: "ServerBusy" }) : undefined;
    await v.write(0, pattern(1, 4096));
    expect(events).toContainEqual(expect.objectContaining({ type: "throttle-pause", replica: "r1", pool: "pool1", status: 503 }));
    expect(events.every((e) => e.replica === "r1" && e.pool === "pool1")).toBe(true);
    expect(v.replicas()[1]!.state).toBe("ONLINE");
  });

  it("gives the last ONLINE member the volume's retry deadline, not the replica's", async () => {
    const transient = () => new StorageError("Transient", "reset", { status: 0 });
    const v = await open(2, { replicaDeadlineMs: 0, throttle: { retryBaseMs: 1, retryMaxMs: 1 } });
    faulty[0]!.plan = (c) => (c.op === "write" ? transient() : undefined);
    await v.write(0, pattern(1, 4096));
    expect(v.replicas().map((r) => r.state)).toEqual(["OFFLINE", "ONLINE"]);
    // r1 is the last: two failures in a row are retried, as a single backend would.
    let left = 2;
    faulty[1]!.plan = (c) => (c.op === "write" && left-- > 0 ? transient() : undefined);
    await v.write(MiB, pattern(2, 4096));
    expect(left).toBe(-1);
    expect(failed).toEqual([]);
    expect(v.metrics().throttle.retries).toBeGreaterThanOrEqual(2);
    expect(Buffer.from(await mems[1]!.read(MiB, 4096)).equals(pattern(2, 4096))).toBe(true);
  });

  it("refuses to open without an ONLINE member, and a member of another size", async () => {
    await expect(open(2, { offline: ["r0", "r1"] })).rejects.toMatchObject({ code: "NoOnlineReplica" });
    vol = undefined;
    const small = new MemoryBackend({ size: SIZE / 2 });
    await expect(
      openReplicatedVolume(
        [
          { id: "a", pool: "p", device: mems[0]! },
          { id: "b", pool: "q", device: small },
        ],
        options(),
      ),
    ).rejects.toMatchObject({ code: "SizeMismatch" });
  });
});
