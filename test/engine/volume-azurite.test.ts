/**
 * The whole engine stack over the page blob backend on Azurite: the
 * BlockDevice contract with unaligned I/O, and what merging does to
 * sequential 4 KiB writes at queue depth 32 against the real Put Page path.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PageBlobBackend } from "../../agent/engine/pageblob-backend.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import type { BlockDevice } from "../../agent/nbd/device.ts";
import {
  blockDeviceSuite,
  type DeviceUnderTest,
  pattern,
} from "../conformance/block-device-suite.ts";
import { type Fixture, setupFixture } from "../pageblob/fixture.ts";
import { ProbeDevice } from "./fixtures.ts";

const MiB = 1024 * 1024;
let fx: Fixture;
beforeAll(async () => {
  fx = await setupFixture();
});
afterAll(() => fx?.close());

async function backend(size: number): Promise<PageBlobBackend> {
  const pb = fx.open(fx.name());
  await pb.create(size);
  const leaseId = await pb.acquireLease(-1);
  return PageBlobBackend.open(pb, { leaseId });
}

blockDeviceSuite(
  "openVolume(PageBlobBackend) on Azurite",
  async (): Promise<DeviceUnderTest> => ({ device: await openVolume(await backend(64 * MiB)) }),
  { alignment: 1, maxIo: 32 * MiB },
);

/** `total` sequential 4 KiB writes kept `depth` deep, like fio; returns writes per second. */
async function sequentialWrites(dev: BlockDevice, total: number, depth: number): Promise<number> {
  let issued = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (issued < total) {
      const i = issued++;
      await dev.write(i * 4096, pattern(i, 4096));
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
  return total / ((performance.now() - started) / 1000);
}

describe("merging on Azurite", () => {
  it("sends sequential 4 KiB writes at depth 32 as at least 10x fewer Put Pages", async () => {
    const total = 4096;
    const raw = await backend(64 * MiB);
    const rawRate = await sequentialWrites(raw, 1024, 32);
    const probe = new ProbeDevice(await backend(64 * MiB));
    const vol = await openVolume(probe);
    probe.calls.length = 0;
    const volRate = await sequentialWrites(vol, total, 32);
    const puts = probe.of("write").length;
    // Reported, not asserted: speed belongs to bench/, the request count is the mechanism.
    console.info(
      `Azurite, sequential 4 KiB at QD32: raw ${rawRate.toFixed(0)} writes/s, ` +
        `volume ${volRate.toFixed(0)} writes/s (${(volRate / rawRate).toFixed(1)}x), ` +
        `${puts} Put Pages for ${total} writes`,
    );
    expect(puts * 10).toBeLessThanOrEqual(total);
    const back = Buffer.from(await vol.read(0, total * 4096));
    for (const i of [0, 1, 777, total - 1]) {
      expect(back.subarray(i * 4096, (i + 1) * 4096).equals(pattern(i, 4096))).toBe(true);
    }
    await vol.close();
    await raw.close();
  });
});
