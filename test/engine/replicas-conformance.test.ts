/**
 * The BlockDevice contract over a replicated volume of two memory members,
 * and of one (the agent serves every volume through the replica layer).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { openReplicatedVolume } from "../../agent/engine/replicas.ts";
import { blockDeviceSuite } from "../conformance/block-device-suite.ts";

const MiB = 1024 * 1024;

for (const ids of [["a", "b"], ["a"]]) {
  blockDeviceSuite(
    `openReplicatedVolume(${ids.map(() => "memory").join(", ")})`,
    async () => {
      const dir = await mkdtemp(join(tmpdir(), "replicas-conformance-"));
      const members = ids.map((id) => ({
        id,
        pool: `pool-${id}`,
        device: new MemoryBackend({ chunkSize: 64 * 1024, size: 64 * MiB }),
      }));
      return {
        device: await openReplicatedVolume(members, { dirtyLog: { dir, epoch: 1 } }),
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
    { alignment: 1, maxIo: 32 * MiB },
  );
}
