import { afterEach, describe, expect, it, vi } from "vitest";
import {
  FailureLatch,
  failure,
  fence,
  type VolumeFailedEvent,
} from "../../agent/engine/failure.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import { BlockError } from "../../agent/nbd/device.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { FaultyDevice, GatedDevice, settle, watch } from "./fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

const leaseLost = () =>
  new StorageError(
    "LeaseLost",
    "There is currently a lease on the blob and no lease ID was specified",
    {
      status: 412,
      azureCode: "LeaseIdMissing",
    },
  );

function isEio(err: unknown): boolean {
  return err instanceof BlockError && err.errno === "EIO";
}

describe("failure", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("on a lost lease fails every pending and every new request with EIO and stops all backend calls", async () => {
    const mem = new MemoryBackend({ size: 16 * MiB });
    const gated = new GatedDevice(mem, ["close"]);
    const failed: VolumeFailedEvent[] = [];
    const opening = watch(
      openVolume(gated, {
        onFailed: (e) => failed.push(e),
        coalesce: { maxInFlight: 2, holdContiguous: false },
      }),
    );
    // The map load goes through the gate too; let it finish.
    while (!opening.settled) {
      await settle();
      await gated.releaseAll();
    }
    const vol = await opening.promise;
    const before = gated.calls.length;
    // Two writes reach the backend, six more queue behind them, one read waits too.
    const writes = Array.from({ length: 8 }, (_, i) =>
      watch(vol.write(i * MiB, pattern(i, 4 * KiB))),
    );
    await settle();
    const read = watch(vol.read(0, 4 * KiB));
    await settle();
    expect(gated.held.map((g) => g.call.op).sort()).toEqual(["read", "write", "write"]);
    const atBackend = gated.calls.length;
    // The storage fences us: the first write comes back 412.
    gated.held.find((g) => g.call.op === "write")!.fail(leaseLost());
    await settle();
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({
      type: "volume-failed",
      reason: "lease-lost",
      code: "LeaseLost",
      status: 412,
    });
    expect(vol.failure?.reason).toBe("lease-lost");
    // New requests fail at once.
    await expect(vol.write(0, pattern(8, 4 * KiB))).rejects.toSatisfy(isEio);
    // Queued writes are answered at once; the two calls still at the backend
    // may be using their buffers, so those requests wait for them.
    const atBackendStill = gated.held
      .filter((g) => g.call.op === "write")
      .map((g) => g.call.offset);
    const inFlight = writes.filter((_, i) => atBackendStill.includes(i * MiB));
    expect(inFlight).toHaveLength(1);
    expect(
      writes.filter((w) => !inFlight.includes(w)).every((w) => w.settled && isEio(w.error)),
    ).toBe(true);
    expect(inFlight[0]!.settled || read.settled).toBe(false);
    // The other in-flight write fails the same way: still only one event.
    gated.held.find((g) => g.call.op === "write")!.fail(leaseLost());
    await settle();
    expect(failed).toHaveLength(1);
    expect(inFlight[0]!.settled && isEio(inFlight[0]!.error)).toBe(true);
    expect(read.settled).toBe(false);
    // The read succeeds at the backend, but the volume has failed: EIO.
    await gated.releaseAll();
    await settle();
    expect(read.settled && isEio(read.error)).toBe(true);
    // Nothing queued went to the backend, and nothing new does.
    for (const op of [
      vol.write(0, pattern(9, 4 * KiB)),
      vol.read(8 * MiB, 4 * KiB),
      vol.flush(),
      vol.trim(0, 4 * KiB),
      vol.writeZeroes(0, 4 * KiB),
      vol.blockStatus(0, 1 * MiB),
    ]) {
      await expect(op).rejects.toSatisfy(isEio);
    }
    await settle();
    expect(gated.calls.length).toBe(atBackend);
    expect(gated.calls.length - before).toBe(3);
    await vol.close();
    expect(gated.of("close")).toHaveLength(1);
    expect(gated.calls.filter((c) => c.op !== "close").length).toBe(atBackend);
    expect(vol.metrics().failed).toBe(true);
  });

  it("fails the volume when a throttle outlasts the deadline, with requests waiting in the pause answered at once", async () => {
    vi.useFakeTimers();
    const mem = new MemoryBackend({ size: 16 * MiB });
    const busy = new StorageError("Throttled", "ServerBusy", {
      status: 503,
      azureCode: "ServerBusy",
    });
    const faulty = new FaultyDevice(mem);
    const failed: VolumeFailedEvent[] = [];
    const vol = await openVolume(faulty, {
      onFailed: (e) => failed.push(e),
      throttle: { deadlineMs: 20_000, pauseMs: 1000, maxPauseMs: 4000 },
    });
    faulty.plan = (call) => (call.op === "write" ? busy : undefined);
    const w = watch(vol.write(0, pattern(1, 4 * KiB)));
    await vi.advanceTimersByTimeAsync(500);
    const r = watch(vol.read(0, 4 * KiB));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(w.settled).toBe(false);
    expect(r.settled && r.error === undefined).toBe(true);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(w.settled && isEio(w.error)).toBe(true);
    expect(failed).toEqual([
      expect.objectContaining({ reason: "retry-deadline", code: "Throttled", status: 503 }),
    ]);
    const calls = faulty.calls.length;
    await expect(vol.read(0, 4 * KiB)).rejects.toSatisfy(isEio);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(faulty.calls.length).toBe(calls);
    expect(vi.getTimerCount()).toBe(0);
  });

  it.each([
    [
      "blob-gone",
      new StorageError("BlobGone", "BlobNotFound", { status: 404, azureCode: "BlobNotFound" }),
    ],
    ["forbidden", new StorageError("Forbidden", "AuthenticationFailed", { status: 403 })],
  ])("fails the volume as %s", async (reason, err) => {
    const mem = new MemoryBackend({ size: 16 * MiB });
    const faulty = new FaultyDevice(mem);
    const failed: VolumeFailedEvent[] = [];
    const vol = await openVolume(faulty, { onFailed: (e) => failed.push(e) });
    faulty.plan = () => err;
    await expect(vol.write(0, pattern(1, 4 * KiB))).rejects.toSatisfy(isEio);
    expect(failed).toEqual([expect.objectContaining({ type: "volume-failed", reason })]);
  });

  it("answers a non-fatal storage error with EIO for that request only", async () => {
    const mem = new MemoryBackend({ size: 16 * MiB });
    let once = true;
    const faulty = new FaultyDevice(mem, (call) => {
      if (call.op === "write" && once) {
        once = false;
        return new StorageError("Invalid", "InvalidPageRange", { status: 416 });
      }
      return undefined;
    });
    const failed: VolumeFailedEvent[] = [];
    const vol = await openVolume(faulty, { onFailed: (e) => failed.push(e) });
    await expect(vol.write(0, pattern(1, 4 * KiB))).rejects.toSatisfy(isEio);
    await vol.write(0, pattern(2, 4 * KiB));
    expect(Buffer.from(await vol.read(0, 4 * KiB)).equals(pattern(2, 4 * KiB))).toBe(true);
    expect(failed).toEqual([]);
    expect(vol.metrics().errors).toBe(1);
  });

  it("fails opening when the map cannot be loaded because the blob is gone", async () => {
    const mem = new MemoryBackend({ size: 16 * MiB });
    const faulty = new FaultyDevice(
      mem,
      () => new StorageError("BlobGone", "BlobNotFound", { status: 404 }),
    );
    const failed: VolumeFailedEvent[] = [];
    await expect(openVolume(faulty, { onFailed: (e) => failed.push(e) })).rejects.toBeInstanceOf(
      StorageError,
    );
    expect(failed.map((e) => e.reason)).toEqual(["blob-gone"]);
  });

  it("the fence refuses calls once the latch is set, and the latch fires once", async () => {
    const events: VolumeFailedEvent[] = [];
    const latch = new FailureLatch((e) => events.push(e));
    const mem = new MemoryBackend({ size: 1 * MiB });
    const fenced = fence(mem, { latch });
    const dev = failure(fenced, { latch });
    await dev.write(0, pattern(1, 512));
    expect(latch.trip(leaseLost())).toBe(true);
    expect(latch.trip(leaseLost())).toBe(false);
    expect(latch.signal.aborted).toBe(true);
    await expect(fenced.write(0, pattern(2, 512))).rejects.toSatisfy(isEio);
    await expect(fenced.read(0, 512)).rejects.toSatisfy(isEio);
    expect(fenced.refused).toBe(2);
    expect(Buffer.from(await mem.read(0, 512)).equals(pattern(1, 512))).toBe(true);
    expect(events).toHaveLength(1);
  });

  it("close waits for requests in progress", async () => {
    const latch = new FailureLatch();
    const gated = new GatedDevice(new MemoryBackend({ size: 1 * MiB }), ["close"]);
    const dev = failure(gated, { latch });
    const w = watch(dev.write(0, pattern(1, 512)));
    const c = watch(dev.close());
    await settle();
    expect(c.settled).toBe(false);
    await expect(dev.read(0, 512)).rejects.toMatchObject({ errno: "ESHUTDOWN" });
    await gated.releaseAll();
    await settle();
    expect(w.settled && c.settled).toBe(true);
    expect(gated.of("close")).toHaveLength(1);
  });
});
