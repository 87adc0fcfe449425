/**
 * Fencing a LOST owner while one replica's pool (`pb`, behind the fault
 * proxy) does not answer: the volume fails over on the reachable replica,
 * which the new owner leases; the dark replica is recorded OFFLINE with
 * the reason, still holding the old owner's lease (nobody could reach it to
 * break it). When the pool answers again, that lease is broken and the
 * volume's taken before any resync is ordered: an old writer never keeps a
 * lease on a replica the new writer resyncs.
 */
import type { PageBlobClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sweep } from "../../../functions/health/sweep.ts";
import { pools } from "../../../functions/registry/pools.ts";
import type { VolumeRecord } from "../../../functions/registry/volumes.ts";
import { restStatus } from "../../../functions/rest-error.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { NO_SECOND_LOOK } from "../agents.ts";
import { POLICY, REPAIR, startWorld, type World } from "./world.ts";

let w: World;
beforeAll(async () => {
  w = await startWorld();
  await w.join("n-a");
  await w.join("n-b");
});
afterAll(() => w?.dispose());

class SimulatedCrash extends Error {}

/** The replica's blob, reached directly (not through the proxy). */
function blobOf(v: VolumeRecord, pool: string): PageBlobClient {
  const r = v.status.replicas.find((x) => x.pool === pool)!;
  return w.fx.blobs
    .getContainerClient(replicaContainerName(`${pool}-disks`, r.id))
    .getPageBlobClient(`${v.name}/${r.id}`);
}

/** HTTP status of one 512-byte Put Page under `leaseId`, as a writer holding it sends it. */
async function writeStatus(blob: PageBlobClient, leaseId: string): Promise<number> {
  try {
    return (await blob.uploadPages(Buffer.alloc(512, 7), 0, 512, { conditions: { leaseId } }))
      ._response.status;
  } catch (err) {
    return restStatus(err) ?? 0;
  }
}

describe("fencing with one replica's pool dark", () => {
  let oldLease: string;
  let darkId: string;

  it("fails the volume over on the reachable replica; the dark one is OFFLINE, saying why", async () => {
    const created = await w.create("v-f");
    expect(created.status.replicas.map((r) => r.pool)).toEqual(["pa", "pb"]);
    darkId = created.status.replicas[1]!.id;
    await w.attach("v-f", "n-a");
    await w.pass();
    const before = await w.record("v-f");
    oldLease = before.leaseId!;

    // n-a dies, and pb goes dark, before the sweeper notices either.
    w.proxy.inject({ fault: { type: "reset" } });
    w.silence("n-a");
    w.clock.ms += POLICY.lostAfterMs;
    await w.pass();

    const v = await w.record("v-f");
    expect(v.status).toMatchObject({ state: "ATTACHED", ownerNode: "n-b", epoch: before.status.epoch + 2 });
    expect(v.leaseId).not.toBe(oldLease);
    expect(v.status.replicas.find((r) => r.pool === "pa")!.state).toBe("ONLINE");
    expect(v.status.replicas.find((r) => r.pool === "pb")).toMatchObject({
      state: "OFFLINE",
      // Fencing first takes the old writer's SAS away (replica-container.ts), then its lease.
      message: expect.stringMatching(/^unreachable when fenced: pool pb: clear container policy failed \(no response/),
    });
    expect(await w.events("v-f", "volume-failed-over")).toHaveLength(1);
    expect(await w.events("v-f", "replica-offline")).toHaveLength(1);

    // The reachable replica is the new owner's alone.
    expect(await writeStatus(blobOf(v, "pa"), v.leaseId!)).toBe(201);
    expect(await writeStatus(blobOf(v, "pa"), oldLease)).toBe(412);
    // The dark one still holds the old owner's lease: nobody could reach it to break it.
    expect(await writeStatus(blobOf(v, "pb"), oldLease)).toBe(201);
    expect(await writeStatus(blobOf(v, "pb"), v.leaseId!)).toBe(412);

    // n-b is told of pb as OFFLINE: neither written nor read.
    const told = await w.desired("n-b");
    const seen = told.attachments.find((a) => a.volume === "v-f")!.replicas;
    expect(seen.map((r) => [r.id, r.state])).toEqual([
      [v.status.replicas[0]!.id, "ONLINE"],
      [darkId, "OFFLINE"],
    ]);
  });

  it("while the pool answers probes but refuses leases, no resync is ordered", async () => {
    w.proxy.clear();
    w.proxy.inject({ fault: { type: "status", status: 500, code: "InternalError" }, only: ["lease"] });
    w.clock.ms += REPAIR.suspectWindowMs + 1_000;
    await w.pass();
    expect((await pools(w.fx.registry).get("pb"))!.value.health).toBe("GOOD");
    const v = await w.record("v-f");
    expect(v.status.replicas[1]).toMatchObject({
      id: darkId,
      state: "OFFLINE",
      message: expect.stringMatching(/^waiting: its lease could not be taken: pool pb: take lease failed \(500/),
    });
    expect(await w.events("v-f", "replica-resync-started")).toHaveLength(0);
    expect(await writeStatus(blobOf(v, "pb"), oldLease)).toBe(201);
  });

  it("breaks the old owner's lease and takes the volume's before the resync is recorded", async () => {
    w.proxy.clear();
    // A pass that dies right before it records the resync has taken the lease already.
    let crashed = false;
    await w.pass({
      beforeStep: (at) => {
        if (at === "repair-record") {
          crashed = true;
          throw new SimulatedCrash(at);
        }
      },
    });
    expect(crashed).toBe(true);
    expect(w.reported.splice(0)).toEqual([expect.any(SimulatedCrash)]);
    let v = await w.record("v-f");
    expect(v.status.replicas[1]!.state).toBe("OFFLINE");
    expect(await writeStatus(blobOf(v, "pb"), oldLease)).toBe(412);
    expect(await writeStatus(blobOf(v, "pb"), v.leaseId!)).toBe(201);

    await w.pass();
    v = await w.record("v-f");
    expect(v.status.replicas[1]).toMatchObject({ id: darkId, state: "RESYNCING", message: "resync ordered" });
    expect(await w.events("v-f", "replica-resync-started")).toHaveLength(1);
    expect(await writeStatus(blobOf(v, "pb"), oldLease)).toBe(412);
    expect(await writeStatus(blobOf(v, "pb"), v.leaseId!)).toBe(201);

    // The new writer finishes the copy: both replicas are ONLINE, and the pass after does nothing.
    await w.report("n-b", [
      {
        volume: "v-f",
        epoch: v.status.epoch,
        state: "SERVING",
        replicas: v.status.replicas.map((r) => ({ id: r.id, state: "ONLINE" as const })),
      },
    ]);
    await w.pass();
    expect((await w.record("v-f")).status.replicas.map((r) => r.state)).toEqual(["ONLINE", "ONLINE"]);
    const settled = await w.fx.snapshot();
    await sweep(w.cp(), POLICY, NO_SECOND_LOOK);
    expect((await w.fx.snapshot()).tables).toEqual(settled.tables);
    expect(w.reported).toEqual([]);
  });
});
