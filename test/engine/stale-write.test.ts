/**
 * No stale write can land: a Put Page the agent gave up on, which the
 * service still holds, must never land after its retry or after a newer
 * write to the same bytes. The fault proxy plays the service: it takes the
 * first Put Page whole and sits on it, then lets it go only once the retry
 * and a newer overlapping write have been acknowledged. Azurite (read
 * directly, not through the proxy) must then hold the newer data.
 *
 * Client and server timeouts are short here (1-2 s) so the doubts pass
 * quickly; the proxy keeps Azure's rule that a request whose `timeout` has
 * passed is answered OperationTimedOut and never carried out.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { PageBlobBackend } from "../../agent/engine/pageblob-backend.ts";
import { RetryDeadlineError, throttle } from "../../agent/engine/throttle.ts";
import { openVolume, type Volume, type VolumeOptions } from "../../agent/engine/volume.ts";
import { systemClock } from "../../agent/pageblob/clock.ts";
import type { OpenOptions } from "../../agent/pageblob/connect.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import type { FaultProxy } from "../harness/fault-proxy.ts";
import { pattern, type ProxiedFixture, setupProxiedFixture } from "../pageblob/fixture.ts";
import { FaultyDevice, watch } from "./fixtures.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";

const KiB = 1024;
const SIZE = 1024 * KiB;
const LEN = 64 * KiB;
const OLD = pattern(LEN, 1);
const NEW = pattern(LEN, 2);

let fx: ProxiedFixture;
let proxy: FaultProxy;
const open: Volume[] = [];
beforeAll(async () => {
  fx = await setupProxiedFixture();
  ({ proxy } = fx);
});
afterAll(() => fx?.close());
afterEach(async () => {
  await proxy.release();
  proxy.clear();
  proxy.resetCounts();
  await Promise.allSettled(open.splice(0).map((v) => v.close()));
});

/** A volume over a fresh blob, reached through the proxy with real time and the given timeouts. */
async function volumeViaProxy(
  name: string,
  timeouts: Pick<OpenOptions, "timeoutMs" | "serverTimeoutSec">,
  options: VolumeOptions = {},
): Promise<Volume> {
  const blob = fx.open(name, {
    endpoint: proxy.blobEndpoint,
    clock: systemClock,
    inDoubtMarginMs: 200,
    ...timeouts,
  });
  const vol = await openVolume(new PageBlobBackend(blob, SIZE), options);
  open.push(vol);
  return vol;
}

async function newBlob(): Promise<string> {
  const name = fx.name();
  await fx.open(name).create(SIZE);
  return name;
}

/** What Azurite holds, read past the proxy. */
function stored(name: string): Promise<Buffer> {
  return fx.container.getPageBlobClient(name).downloadToBuffer(0, LEN);
}

/**
 * The one held first attempt reaches the service last of all: its server
 * timeout has passed, so it is answered OperationTimedOut and never carried
 * out, and Azurite keeps the newer data. `forwarded` Put Pages went through.
 */
async function expectHeldAttemptVoid(name: string, forwarded: number): Promise<void> {
  expect(proxy.holding()).toBe(1);
  await proxy.release();
  expect((await stored(name)).equals(NEW)).toBe(true);
  expect(proxy.faulted("putPage")).toBe(1);
  expect(proxy.forwarded("putPage")).toBe(forwarded);
}

describe("an abandoned Put Page that the service still holds", () => {
  it("held past the client's timeout and let through after the retry and a newer write: the newer data survives", async () => {
    const name = await newBlob();
    const vol = await volumeViaProxy(name, { timeoutMs: 1500, serverTimeoutSec: 1 });
    proxy.inject({ fault: { type: "hold" }, only: ["putPage"], times: 1 });
    // Held; the client gives up, the engine retries, the retry is acknowledged.
    await vol.write(0, OLD);
    await vol.write(0, NEW);
    await expectHeldAttemptVoid(name, 2);
    expect(vol.metrics().failed).toBe(false);
  });

  it("whose connection was cut after it was sent is not resent, nor overtaken, before it can no longer land", async () => {
    const name = await newBlob();
    const vol = await volumeViaProxy(name, { timeoutMs: 3000, serverTimeoutSec: 2 });
    // The service has the whole request; the client only sees its connection reset.
    proxy.inject({ fault: { type: "hold", cut: true }, only: ["putPage"], times: 1 });
    await vol.write(0, OLD);
    await vol.write(0, NEW);
    await expectHeldAttemptVoid(name, 2);
  });

  it("fails the volume when its doubt outlasts the deadline, and the next client of the blob still waits it out", async () => {
    const name = await newBlob();
    const timeouts = { timeoutMs: 3000, serverTimeoutSec: 2 };
    const vol = await volumeViaProxy(name, timeouts, { throttle: { deadlineMs: 1000 } });
    proxy.inject({ fault: { type: "hold", cut: true }, only: ["putPage"], times: 1 });
    // The retry could not be sent before the deadline: EIO at once, the attempt still alive.
    await expect(vol.write(0, OLD)).rejects.toMatchObject({ errno: "EIO" });
    expect(vol.failure).toMatchObject({ reason: "retry-deadline", code: "Transient" });
    await vol.close();
    // The volume is opened again in the same process, on a new client, and written at once.
    const again = await volumeViaProxy(name, timeouts);
    await again.write(0, NEW);
    await expectHeldAttemptVoid(name, 1);
  });
});

describe("throttle and a Retry-After past the deadline", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("fails at once instead of holding the request to the deadline", async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const doubt = new StorageError("Transient", "Put Page 0+4096: reset (outcome unknown)", {
      retryAfterMs: 22_200,
    });
    let failures = 1;
    const dev = new FaultyDevice(new MemoryBackend({ size: SIZE }), () =>
      failures-- > 0 ? doubt : undefined,
    );
    // A replica's deadline: shorter than the doubt.
    const replica = throttle(dev, { deadlineMs: 5000, random: () => 0 });
    const w = watch(replica.write(0, pattern(4 * KiB, 3)));
    await vi.advanceTimersByTimeAsync(0);
    expect(w.error).toBeInstanceOf(RetryDeadlineError);
    expect((w.error as RetryDeadlineError).cause).toBe(doubt);
    expect(dev.calls).toHaveLength(1);

    // A volume's deadline: long enough, so it waits the whole Retry-After, then retries.
    failures = 1;
    const volume = throttle(dev, { deadlineMs: 120_000, random: () => 0 });
    const v = watch(volume.write(0, pattern(4 * KiB, 3)));
    await vi.advanceTimersByTimeAsync(22_199);
    expect(dev.calls).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(v.settled && v.error === undefined).toBe(true);
    expect(dev.calls).toHaveLength(3);
  });
});
