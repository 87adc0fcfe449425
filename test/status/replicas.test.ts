/**
 * Replica states on the status API: GET /volumes lists each replica with
 * its copy progress, GET /metrics has a gauge family per replica. The
 * volume is a real replicated engine over memory members (one whose blob
 * "disappears", so it goes OFFLINE and its dirty log holds the writes it
 * missed); the copy in progress is given as the agent would show one
 * mid-rebuild.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { openReplicatedVolume, type ReplicatedVolume } from "../../agent/engine/replicas.ts";
import { statusApp } from "../../agent/status/app.ts";
import type { ReplicaStatus, ServedVolume, StatusSource } from "../../agent/status/source.ts";
import { parseExposition } from "./exposition.ts";

const MiB = 1024 * 1024;

/** A fault injector: a memory device whose writes find the blob gone (404) once told so. */
class Vanishing extends MemoryBackend {
  gone = false;
  override write(offset: number, data: Uint8Array): Promise<void> {
    if (this.gone) return Promise.reject(new StorageError("BlobGone", "injected: blob not found", { status: 404 }));
    return super.write(offset, data);
  }
}

describe("status API of a replicated volume", () => {
  let dir: string;
  let volume: ReplicatedVolume;
  let source: StatusSource;
  /** What the agent shows besides the engine's members: a rebuild half done. */
  const rebuilding: ReplicaStatus = {
    id: "cccccccccccc",
    pool: "pc",
    state: "REBUILDING",
    progress: 50,
    copiedBytes: 4 * MiB,
    totalBytes: 8 * MiB,
    dirtyBytes: 0,
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "pagedisk-status-replicas-"));
    const vanishing = new Vanishing({ size: 8 * MiB });
    volume = await openReplicatedVolume(
      [
        { id: "aaaaaaaaaaaa", pool: "pa", device: new MemoryBackend({ size: 8 * MiB }) },
        { id: "bbbbbbbbbbbb", pool: "pb", device: vanishing },
      ],
      { dirtyLog: { dir, epoch: 3, granularity: 64 * 1024 } },
    );
    // Two granules missed by the replica gone offline.
    vanishing.gone = true;
    await volume.write(0, new Uint8Array(4096).fill(1));
    await volume.write(2 * MiB, new Uint8Array(4096).fill(2));
    const served: ServedVolume = {
      name: "vol-r",
      epoch: 3,
      state: "DEGRADED",
      sizeBytes: volume.size,
      socket: "/run/pagedisk/vol-r.sock",
      device: null,
      metrics: () => volume.metrics(),
      replicas: (): ReplicaStatus[] => [
        ...volume.replicas().map(({ error: _error, ...r }) => r),
        rebuilding,
      ],
    };
    source = {
      node: () => ({ name: "node-a", version: "0.1.0", controlPlane: "", connected: true, lastHeartbeatAt: null }),
      volumes: () => [served],
    };
  });

  afterAll(async () => {
    await volume?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("GET /volumes lists every replica with its state, dirty bytes and copy progress", async () => {
    const res = await statusApp(source).request("/volumes");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { items: Array<{ name: string; state: string; replicas: unknown[] }> };
    expect(body.items[0]).toMatchObject({ name: "vol-r", state: "DEGRADED" });
    expect(body.items[0]!.replicas).toEqual([
      { id: "aaaaaaaaaaaa", pool: "pa", state: "ONLINE", dirtyBytes: 0 },
      { id: "bbbbbbbbbbbb", pool: "pb", state: "OFFLINE", dirtyBytes: 2 * 64 * 1024 },
      rebuilding,
    ]);
  });

  it("GET /metrics has per-replica gauges: online, state, copy progress, dirty bytes", async () => {
    const exp = parseExposition(await (await statusApp(source).request("/metrics")).text());
    const a = { volume: "vol-r", replica: "aaaaaaaaaaaa", pool: "pa" };
    const b = { volume: "vol-r", replica: "bbbbbbbbbbbb", pool: "pb" };
    const c = { volume: "vol-r", replica: "cccccccccccc", pool: "pc" };
    expect(exp.types.get("pagedisk_replica_online")).toBe("gauge");
    expect(exp.value("pagedisk_replica_online", a)).toBe(1);
    expect(exp.value("pagedisk_replica_online", b)).toBe(0);
    expect(exp.value("pagedisk_replica_online", c)).toBe(0);
    expect(exp.value("pagedisk_replica_state", { ...b, state: "OFFLINE" })).toBe(1);
    expect(exp.value("pagedisk_replica_state", { ...b, state: "ONLINE" })).toBe(0);
    expect(exp.value("pagedisk_replica_state", { ...c, state: "REBUILDING" })).toBe(1);
    expect(exp.value("pagedisk_replica_dirty_bytes", b)).toBe(2 * 64 * 1024);
    expect(exp.value("pagedisk_replica_copy_progress", c)).toBe(0.5);
    expect(exp.value("pagedisk_replica_copied_bytes", c)).toBe(4 * MiB);
    expect(exp.value("pagedisk_replica_copy_total_bytes", c)).toBe(8 * MiB);
    // Only a replica being copied to has copy gauges.
    expect(exp.find("pagedisk_replica_copy_progress", a)).toEqual([]);
    expect(exp.find("pagedisk_replica_copy_progress", b)).toEqual([]);
  });
});
