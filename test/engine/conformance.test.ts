/**
 * The BlockDevice contract over the memory backend and over every engine
 * layer, alone and stacked, on the memory backend.
 */
import { align } from "../../agent/engine/align.ts";
import { coalesce } from "../../agent/engine/coalesce.ts";
import { FailureLatch, failure, fence } from "../../agent/engine/failure.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { sparse } from "../../agent/engine/sparse.ts";
import { throttle } from "../../agent/engine/throttle.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import type { BlockDevice } from "../../agent/nbd/device.ts";
import { blockDeviceSuite } from "../conformance/block-device-suite.ts";

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

/** Holes at 64 KiB granularity (not the 1 MiB default), which the hole expectations are written for. */
function memory(readOnly = false): MemoryBackend {
  return new MemoryBackend({ chunkSize: 64 * 1024, size: SIZE, readOnly });
}

async function loaded(dev: BlockDevice): Promise<BlockDevice> {
  const map = sparse(dev);
  await map.load();
  return map;
}

blockDeviceSuite("MemoryBackend", async () => ({ device: memory() }), {
  makeReadOnly: async () => ({ device: memory(true) }),
});

blockDeviceSuite("align(memory)", async () => ({ device: align(memory()) }), {
  alignment: 1,
  // align alone does not split: an unaligned request grows by up to a sector each side.
  maxIo: 4 * MiB - 1024,
  makeReadOnly: async () => ({ device: align(memory(true)) }),
});

blockDeviceSuite("coalesce(memory)", async () => ({ device: coalesce(memory()) }), {
  maxIo: 32 * MiB,
  makeReadOnly: async () => ({ device: coalesce(memory(true)) }),
});

blockDeviceSuite(
  "coalesce(memory), one in flight",
  async () => ({
    device: coalesce(memory(), { maxInFlight: 1 }),
  }),
  { maxIo: 32 * MiB },
);

blockDeviceSuite("sparse(memory)", async () => ({ device: await loaded(memory()) }), {
  makeReadOnly: async () => ({ device: await loaded(memory(true)) }),
});

blockDeviceSuite("throttle(memory)", async () => ({ device: throttle(memory()) }), {
  makeReadOnly: async () => ({ device: throttle(memory(true)) }),
});

blockDeviceSuite(
  "failure(fence(memory))",
  async () => {
    const latch = new FailureLatch();
    return { device: failure(fence(memory(), { latch }), { latch }) };
  },
  {
    makeReadOnly: async () => {
      const latch = new FailureLatch();
      return { device: failure(fence(memory(true), { latch }), { latch }) };
    },
  },
);

blockDeviceSuite(
  "align(sparse(coalesce(memory)))",
  async () => ({
    device: align(await loaded(coalesce(memory(), { maxInFlight: 4 }))),
  }),
  { alignment: 1, maxIo: 32 * MiB },
);

blockDeviceSuite("openVolume(memory)", async () => ({ device: await openVolume(memory()) }), {
  alignment: 1,
  maxIo: 32 * MiB,
  makeReadOnly: async () => ({ device: await openVolume(memory(true)) }),
});

blockDeviceSuite(
  "openVolume(memory) without the sparse map, small sub-range loads",
  async () => ({
    device: await openVolume(memory(), { sparse: false, coalesce: { maxInFlight: 2 } }),
  }),
  { alignment: 1, maxIo: 32 * MiB },
);

blockDeviceSuite(
  "openVolume(memory) loading the map in 1 MiB sub-ranges",
  async () => ({ device: await openVolume(memory(), { sparse: { loadChunkBytes: 1 * MiB } }) }),
  { alignment: 1, maxIo: 32 * MiB },
);
