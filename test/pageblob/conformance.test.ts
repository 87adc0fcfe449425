/**
 * The shared BlockDevice contract over PageBlobBackend on Azurite, with an
 * infinite lease held on every blob so that each write, trim and zero in the
 * suite must carry the lease id to succeed.
 */
import { afterAll, beforeAll } from "vitest";
import { PageBlobBackend } from "../../agent/engine/pageblob-backend.ts";
import { blockDeviceSuite, type DeviceUnderTest } from "../conformance/block-device-suite.ts";
import { type Fixture, setupFixture } from "./fixture.ts";

const SIZE = 16 * 1024 * 1024;
let fx: Fixture;
beforeAll(async () => {
  fx = await setupFixture();
});
afterAll(() => fx?.close());

async function leasedDevice(readOnly = false): Promise<DeviceUnderTest> {
  const pb = fx.open(fx.name());
  await pb.create(SIZE);
  const leaseId = await pb.acquireLease(-1);
  return { device: await PageBlobBackend.open(pb, { leaseId, readOnly }) };
}

blockDeviceSuite("PageBlobBackend on Azurite", () => leasedDevice(), {
  makeReadOnly: () => leasedDevice(true),
});
