/**
 * A replicated volume of two page blobs on Azurite, the second reached
 * through a fault proxy: its endpoint refused, then cut, while the volume
 * keeps serving from the first; resynced from the dirty log once back.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PageBlobBackend } from "../../agent/engine/pageblob-backend.ts";
import { openReplicatedVolume, type ReplicaFailure } from "../../agent/engine/replicas.ts";
import type { PageBlob } from "../../agent/pageblob/page-blob.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { type ProxiedFixture, setupProxiedFixture } from "../pageblob/fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 16 * MiB;

let fx: ProxiedFixture;
let dir: string;
beforeAll(async () => {
  fx = await setupProxiedFixture();
  dir = await mkdtemp(join(tmpdir(), "replicas-azurite-"));
});
afterAll(async () => {
  await fx?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A leased blob and a backend over it; `endpoint` routes it through the proxy. */
async function replica(name: string, endpoint?: string): Promise<{ blob: PageBlob; backend: PageBlobBackend; leaseId: string }> {
  const admin = fx.open(name);
  await admin.create(SIZE);
  const leaseId = await admin.acquireLease(-1);
  const blob = fx.open(name, endpoint ? { endpoint } : {});
  return { blob: admin, backend: await PageBlobBackend.open(blob, { leaseId }), leaseId };
}

async function blobBytes(blob: PageBlob, leaseId: string): Promise<Buffer> {
  return Buffer.from(await blob.read(0, SIZE, undefined, { leaseId }));
}

describe("openReplicatedVolume(PageBlobBackend x2) on Azurite", () => {
  it("goes on through one pool's outage and resyncs only what that replica missed", async () => {
    const a = await replica(fx.name());
    const b = await replica(fx.name(), fx.proxy.blobEndpoint);
    const failures: ReplicaFailure[] = [];
    const marks: string[] = [];
    const vol = await openReplicatedVolume(
      [
        { id: "a", pool: "pool-a", device: a.backend },
        { id: "b", pool: "pool-b", device: b.backend },
      ],
      {
        dirtyLog: { dir, epoch: 1, granularity: 64 * KiB },
        replicaDeadlineMs: 300,
        onFailure: (f) => failures.push(f),
        markOffline: async (id) => {
          marks.push(`offline ${id}`);
        },
        markOnline: async (id) => {
          marks.push(`online ${id}`);
        },
      },
    );
    try {
      await vol.write(0, pattern(1, 4 * MiB));
      expect((await blobBytes(b.blob, b.leaseId)).subarray(0, 4 * MiB).equals(pattern(1, 4 * MiB))).toBe(true);

      // The pool refuses: Forbidden takes the replica offline at once.
      fx.proxy.inject({ fault: { type: "status", status: 403, code: "AuthenticationFailed" } });
      await vol.write(1 * MiB, pattern(2, 64 * KiB));
      expect(failures.map((f) => [f.replica, f.pool, f.code, f.status])).toEqual([["b", "pool-b", "Forbidden", 403]]);
      expect(vol.replicas()[1]).toMatchObject({ state: "OFFLINE", dirtyBytes: 64 * KiB });
      await vol.write(8 * MiB, pattern(3, 128 * KiB));
      await vol.trim(2 * MiB, 64 * KiB);
      expect(vol.metrics().failed).toBe(false);
      expect(Buffer.from(await vol.read(8 * MiB, 128 * KiB)).equals(pattern(3, 128 * KiB))).toBe(true);

      // Back, but the connection is cut during the first resync: it fails past its deadline, offline again.
      fx.proxy.clear();
      fx.proxy.inject({ fault: { type: "reset" }, only: ["putPage", "clearPages"] });
      await expect(vol.resync("b")).rejects.toMatchObject({ code: "CopyFailed" });
      expect(vol.replicas()[1]!.state).toBe("OFFLINE");
      expect(failures.map((f) => f.replica)).toEqual(["b", "b"]);

      fx.proxy.clear();
      fx.proxy.resetCounts();
      await vol.resync("b");
      expect(vol.replicas()[1]).toMatchObject({ state: "ONLINE", dirtyBytes: 0 });
      // The dirty set, not the volume: 64 KiB + 128 KiB of data and one cleared granule.
      expect(fx.proxy.forwarded("putPage")).toBeLessThanOrEqual(3);
      expect(marks).toEqual(["offline b", "offline b", "online b"]);
      expect((await blobBytes(a.blob, a.leaseId)).equals(await blobBytes(b.blob, b.leaseId))).toBe(true);
    } finally {
      await vol.close();
    }
  });

  it("fails the volume when the second replica's lease is broken", async () => {
    const a = await replica(fx.name());
    const b = await replica(fx.name());
    const failed: string[] = [];
    const vol = await openReplicatedVolume(
      [
        { id: "a", pool: "pool-a", device: a.backend },
        { id: "b", pool: "pool-b", device: b.backend },
      ],
      { dirtyLog: { dir, epoch: 2 }, onFailed: (e) => failed.push(e.reason) },
    );
    await b.blob.breakLease(0);
    await expect(vol.write(0, pattern(1, 4096))).rejects.toMatchObject({ errno: "EIO" });
    expect(failed).toEqual(["lease-lost"]);
    await vol.close();
  });
});
