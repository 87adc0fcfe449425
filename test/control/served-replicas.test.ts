/**
 * ServedReplicas on Azurite: the agent's side of a replicated volume driven
 * by desired states written here as the control plane would send them, over
 * real page blobs (leased, SAS URLs; pool "pb" through a fault proxy). What
 * the control plane itself decides is test/e2e's; here: a replica the
 * control plane puts OFFLINE stops being written, one it could not sign for
 * at attach is added by a full resync, an OFFLINE replica without a dirty
 * log says it needs a full copy, and throttling names its replica and pool.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DesiredAttachment, DesiredReplica, ReportedEvent } from "../../contract/node.ts";
import { WRITER_LOST } from "../../contract/signals.ts";
import { NO_DIRTY_LOG, ServedReplicas } from "../../agent/control/served-replicas.ts";
import type { ReplicatedVolume } from "../../agent/engine/replicas.ts";
import { pattern } from "../conformance/block-device-suite.ts";
import { type ProxiedFixture, setupProxiedFixture } from "../pageblob/fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 4 * MiB;
const GRANULE = 64 * KiB;

type LogRecord = Record<string, unknown> & { msg?: string };

let fx: ProxiedFixture;
let dir: string;
beforeAll(async () => {
  fx = await setupProxiedFixture();
  dir = await mkdtemp(join(tmpdir(), "served-replicas-"));
});
afterAll(async () => {
  await fx?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** JSON log records as the agent writes them, and a wait on them (no timers). */
function recordingLog() {
  const records: LogRecord[] = [];
  const waiters = new Set<() => void>();
  const log = pino(
    { level: "debug" },
    {
      write(line: string) {
        records.push(JSON.parse(line) as LogRecord);
        for (const w of waiters) w();
      },
    },
  );
  const waitFor = (match: (r: LogRecord) => boolean): Promise<LogRecord> =>
    new Promise((resolve) => {
      const check = () => {
        const found = records.find(match);
        if (!found) return;
        waiters.delete(check);
        resolve(found);
      };
      waiters.add(check);
      check();
    });
  return { log, records, waitFor };
}

interface Blob {
  id: string;
  pool: string;
  name: string;
}

const leaseId = randomUUID();

/** A replica blob as the control plane creates it: its metadata, leased under the volume's lease id. */
async function createBlob(volume: string, pool: string): Promise<Blob> {
  const id = randomUUID().replace(/-/g, "").slice(0, 12);
  const name = `${volume}/${id}`;
  const client = fx.container.getPageBlobClient(name);
  await client.create(SIZE, { metadata: { pagediskvolume: volume, pagediskreplica: id } });
  await client.getBlobLeaseClient(leaseId).acquireLease(-1);
  return { id, pool, name };
}

function desired(volume: string, replicas: Array<[Blob, DesiredReplica["state"], boolean?]>): DesiredAttachment {
  return {
    volume,
    sizeBytes: SIZE,
    epoch: 4,
    leaseId,
    sasExpiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    replicas: replicas.map(([b, state, signed = true]) => {
      const url = fx.sasUrl(b.name);
      return {
        id: b.id,
        pool: b.pool,
        state,
        url: !signed ? null : b.pool === "pb" ? url.replace(fx.azurite.blobEndpoint, fx.proxy.blobEndpoint) : url,
      };
    }),
  };
}

async function bytes(b: Blob): Promise<Buffer> {
  return fx.container.getPageBlobClient(b.name).downloadToBuffer(0, SIZE);
}

async function metadata(b: Blob): Promise<Record<string, string>> {
  return (await fx.container.getPageBlobClient(b.name).getProperties()).metadata ?? {};
}

describe("ServedReplicas on Azurite", () => {
  let served: ServedReplicas | undefined;
  let events: ReportedEvent[];

  afterEach(async () => {
    fx.proxy.clear();
    if (served) {
      await served.export.drain();
      await served.close();
    }
    served = undefined;
  });

  async function open(want: DesiredAttachment, log: ReturnType<typeof recordingLog>["log"]): Promise<ReplicatedVolume> {
    events = [];
    served = await ServedReplicas.open(want, {
      node: "node-t",
      socket: join(dir, `${want.volume}.sock`),
      dirtyDir: join(dir, "dirty", want.volume),
      dirtyGranularity: GRANULE,
      log,
      report: (e) => events.push(e),
      onFailed: () => {},
    });
    return served.export.volume as ReplicatedVolume;
  }

  it("stops writing a replica the control plane puts OFFLINE, marks it, and resyncs only what it missed", async () => {
    const { log, records, waitFor } = recordingLog();
    const a = await createBlob("vol-off", "pa");
    const b = await createBlob("vol-off", "pb");
    const volume = await open(desired("vol-off", [[a, "ONLINE"], [b, "ONLINE"]]), log);
    await volume.write(0, pattern(1, 1 * MiB));

    served!.update(desired("vol-off", [[a, "ONLINE"], [b, "OFFLINE"]]));
    await waitFor((r) => r.msg === "replica taken offline as the control plane asks" && r.replica === b.id);
    // Marked on the survivor before anything more is written.
    expect(await metadata(a)).toMatchObject({ pagediskoffline: b.id, pagediskofflineepoch: "4" });
    fx.proxy.resetCounts();
    await volume.write(2 * MiB, pattern(2, GRANULE));
    expect(fx.proxy.received("putPage")).toBe(0);
    expect(served!.reports().find((r) => r.id === b.id)).toEqual({
      id: b.id,
      pool: "pb",
      state: "OFFLINE",
      dirtyBytes: GRANULE,
      error: "taken offline by the control plane",
    });
    expect(served!.degraded()).toBe(true);
    // The control plane's own decision: no storage failure to report.
    expect(events).toEqual([]);

    // The last ONLINE one is not taken offline, and says so once.
    served!.update(desired("vol-off", [[a, "OFFLINE"], [b, "OFFLINE"]]));
    served!.update(desired("vol-off", [[a, "OFFLINE"], [b, "OFFLINE"]]));
    await waitFor((r) => r.msg === "replica could not be taken offline" && r.replica === a.id);
    await volume.write(3 * MiB, pattern(3, GRANULE));
    expect(served!.reports().find((r) => r.id === a.id)?.state).toBe("ONLINE");

    served!.update(desired("vol-off", [[a, "ONLINE"], [b, "RESYNCING"]]));
    await waitFor((r) => r.msg === "replica online" && r.replica === b.id);
    // Dirty: the two granules written while it was offline, not the volume.
    expect(fx.proxy.received("putPage")).toBe(2);
    expect((await bytes(b)).equals(await bytes(a))).toBe(true);
    expect(await metadata(a)).not.toHaveProperty("pagediskoffline");
    expect(records.filter((r) => r.msg === "replica could not be taken offline")).toHaveLength(1);
  });

  it("drops a retired replica's offline mark from the survivors' metadata", async () => {
    const { log, waitFor } = recordingLog();
    const a = await createBlob("vol-ret", "pa");
    const c = await createBlob("vol-ret", "pc");
    const b = await createBlob("vol-ret", "pb");
    const volume = await open(desired("vol-ret", [[a, "ONLINE"], [c, "ONLINE"], [b, "ONLINE"]]), log);
    await volume.write(0, pattern(4, GRANULE));
    served!.update(desired("vol-ret", [[a, "ONLINE"], [c, "ONLINE"], [b, "OFFLINE"]]));
    await waitFor((r) => r.msg === "replica taken offline as the control plane asks" && r.replica === b.id);
    expect(await metadata(a)).toMatchObject({ pagediskoffline: b.id });
    expect(await metadata(c)).toMatchObject({ pagediskoffline: b.id });

    served!.update(desired("vol-ret", [[a, "ONLINE"], [c, "ONLINE"]]));
    await waitFor((r) => r.msg === "replica removed" && r.replica === b.id);
    for (const x of [a, c]) {
      const left = await metadata(x);
      expect(left).not.toHaveProperty("pagediskoffline");
      expect(left).not.toHaveProperty("pagediskofflineepoch");
      expect(left).toMatchObject({ pagediskvolume: "vol-ret", pagediskreplica: x.id });
    }
  });

  it("after an unclean stop at the same epoch keeps the first replica and resyncs the other in full; after a clean one, neither", async () => {
    const { log, waitFor } = recordingLog();
    const a = await createBlob("vol-crash", "pa");
    const b = await createBlob("vol-crash", "pb");
    const both = desired("vol-crash", [[a, "ONLINE"], [b, "ONLINE"]]);
    let volume = await open(both, log);
    await volume.write(0, pattern(6, GRANULE));
    // A clean stop: drained, flushed, closed. The next open trusts both.
    await served!.export.drain();
    await served!.close();
    served = undefined;
    volume = await open(both, log);
    expect(served!.reports().map((r) => r.state)).toEqual(["ONLINE", "ONLINE"]);

    // The agent dies while writing: a write lands on a only, and nothing is closed cleanly.
    await fx.container.getPageBlobClient(a.name).uploadPages(pattern(7, GRANULE), GRANULE, GRANULE, { conditions: { leaseId } });
    await served!.export.drain();
    await served!.close(false);
    served = undefined;
    volume = await open(both, log);
    expect(served!.reports().find((r) => r.id === b.id)).toMatchObject({
      state: "OFFLINE",
      error: `${WRITER_LOST}: this node stopped while writing; resynced in full from ${a.id}; ${NO_DIRTY_LOG}`,
      stale: true,
    });
    expect(await metadata(a)).toMatchObject({ pagediskoffline: b.id });
    expect(events).toEqual([]);
    served!.update(desired("vol-crash", [[a, "ONLINE"], [b, "RESYNCING"]]));
    await waitFor((r) => r.msg === "replica online" && r.replica === b.id);
    expect((await bytes(b)).equals(await bytes(a))).toBe(true);
    expect((await bytes(b)).subarray(GRANULE, 2 * GRANULE).equals(pattern(7, GRANULE))).toBe(true);
    await volume.write(3 * GRANULE, pattern(8, GRANULE));
    expect((await bytes(b)).equals(await bytes(a))).toBe(true);
  });

  it("says the replicas may differ when a write reached one and the other's lease was gone", async () => {
    const { log } = recordingLog();
    const a = await createBlob("vol-div", "pa");
    const b = await createBlob("vol-div", "pb");
    const volume = await open(desired("vol-div", [[a, "ONLINE"], [b, "ONLINE"]]), log);
    await volume.write(0, pattern(1, GRANULE));
    expect(served!.diverged()).toBe(false);
    // The control plane takes the volume away: b's lease is broken first.
    await fx.container.getPageBlobClient(b.name).getBlobLeaseClient().breakLease(0);
    await expect(volume.write(GRANULE, pattern(2, GRANULE))).rejects.toMatchObject({ errno: "EIO" });
    expect(served!.diverged()).toBe(true);
    expect((await bytes(a)).subarray(GRANULE, 2 * GRANULE).equals(pattern(2, GRANULE))).toBe(true);
    expect((await bytes(b)).subarray(GRANULE, 2 * GRANULE).equals(pattern(2, GRANULE))).toBe(false);
  });

  it("takes a replica the control plane calls stale offline with no dirty log, and brings it back by a full copy", async () => {
    const { log, waitFor } = recordingLog();
    const a = await createBlob("vol-stale", "pa");
    const b = await createBlob("vol-stale", "pb");
    const volume = await open(desired("vol-stale", [[a, "ONLINE"], [b, "ONLINE"]]), log);
    await volume.write(0, pattern(1, 3 * GRANULE));
    const stale = desired("vol-stale", [[a, "ONLINE"], [b, "OFFLINE"]]);
    stale.replicas[1]!.stale = true;
    served!.update(stale);
    await waitFor((r) => r.msg === "replica taken offline as the control plane asks" && r.replica === b.id);
    await volume.write(8 * GRANULE, pattern(2, GRANULE));
    expect(served!.reports().find((r) => r.id === b.id)).toMatchObject({ state: "OFFLINE", error: expect.stringContaining(NO_DIRTY_LOG) });
    expect(served!.reports().find((r) => r.id === b.id)).not.toHaveProperty("dirtyBytes");

    fx.proxy.resetCounts();
    served!.update(desired("vol-stale", [[a, "ONLINE"], [b, "RESYNCING"]]));
    await waitFor((r) => r.msg === "replica online" && r.replica === b.id);
    // Every allocated byte of a (3 granules, then 1), not only the granule written while it was offline.
    expect(fx.proxy.received("putPage")).toBe(2);
    expect((await bytes(b)).equals(await bytes(a))).toBe(true);
  });

  it("adds by a full resync a replica it could not sign for at attach, clearing its stale data", async () => {
    const { log, waitFor } = recordingLog();
    const a = await createBlob("vol-add", "pa");
    const c = await createBlob("vol-add", "pb");
    // The old blob holds data the volume no longer has (a hole on a).
    await fx.container.getPageBlobClient(c.name).uploadPages(pattern(9, MiB), 2 * MiB, MiB, { conditions: { leaseId } });
    const volume = await open(desired("vol-add", [[a, "ONLINE"], [c, "RESYNCING", false]]), log);
    expect(served!.reports().find((r) => r.id === c.id)).toMatchObject({ state: "OFFLINE", error: expect.stringContaining("cannot sign") });
    await volume.write(0, pattern(4, MiB));

    served!.update(desired("vol-add", [[a, "ONLINE"], [c, "RESYNCING"]]));
    const started = await waitFor((r) => r.msg === "replica copy started" && r.replica === c.id);
    expect(started).toMatchObject({ kind: "resync", full: true, pool: "pb" });
    await waitFor((r) => r.msg === "replica online" && r.replica === c.id);
    expect(fx.proxy.received("clearPages")).toBeGreaterThan(0);
    const cBytes = await bytes(c);
    expect(cBytes.subarray(2 * MiB, 3 * MiB).equals(Buffer.alloc(MiB))).toBe(true);
    expect(cBytes.equals(await bytes(a))).toBe(true);
    expect(served!.reports().map((r) => r.state)).toEqual(["ONLINE", "ONLINE"]);
  });

  it("reports an OFFLINE replica without a dirty log as needing a full copy, not as 0 dirty bytes", async () => {
    const { log } = recordingLog();
    const a = await createBlob("vol-full", "pa");
    const b = await createBlob("vol-full", "pb");
    await open(desired("vol-full", [[a, "ONLINE"], [b, "OFFLINE"]]), log);
    const report = served!.reports().find((r) => r.id === b.id)!;
    expect(report).toMatchObject({ state: "OFFLINE", error: NO_DIRTY_LOG });
    expect(report).not.toHaveProperty("dirtyBytes");
  });

  it("names the replica and its pool when a member's pool throttles", async () => {
    const { log, waitFor } = recordingLog();
    const a = await createBlob("vol-busy", "pa");
    const b = await createBlob("vol-busy", "pb");
    const volume = await open(desired("vol-busy", [[a, "ONLINE"], [b, "ONLINE"]]), log);
    fx.proxy.inject({ fault: { type: "busy" }, only: ["putPage"], times: 1 });
    await volume.write(0, pattern(5, GRANULE));
    const pause = await waitFor((r) => r.msg === "storage throttling" && r.type === "throttle-pause");
    expect(pause).toMatchObject({ replica: b.id, pool: "pb", status: 503 });
    expect((await bytes(b)).subarray(0, GRANULE).equals(pattern(5, GRANULE))).toBe(true);
  });
});
