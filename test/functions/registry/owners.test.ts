/**
 * The owner index (functions/registry/owners.ts) over Azurite: an attach
 * writes a node's row before its claim; once a sweeper pass has found the
 * index complete, a node's desired state reads the index's partition and
 * each volume's record, never a scan of the volumes table; a detach
 * deletes its node's row; the sweeper adds the rows a registry from before
 * the index lacks, and deletes a row only when the volume's record,
 * written after it, names another owner.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IssuedToken } from "../../../contract/token.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { sweep } from "../../../functions/health/sweep.ts";
import { noteOwner, ownedBy, reconcileOwners } from "../../../functions/registry/owners.ts";
import { readSweeperState } from "../../../functions/registry/sweeper-state.ts";
import { volumes } from "../../../functions/registry/volumes.ts";
import { partitionOf, recordTableRequests } from "../../harness/table-requests.ts";
import { agentNodes, aheadOfRealTime, NO_SECOND_LOOK, STEPPED_POLICY } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startProxiedControlPlane } from "../fixture.ts";
import type { FaultProxy } from "../../harness/fault-proxy.ts";

let fx: ControlPlaneFixture;
let proxy: FaultProxy;
let token: IssuedToken;
const nowMs = aheadOfRealTime();
const { join, desired, heartbeat } = agentNodes(
  () => fx,
  () => token.token,
  () => new Date(nowMs),
);
const reported: unknown[] = [];
const pass = () =>
  sweep(
    controlPlane({ registry: fx.registry, now: () => new Date(nowMs), report: (e) => reported.push(e) }),
    STEPPED_POLICY,
    NO_SECOND_LOOK,
  );

beforeAll(async () => {
  ({ fx, proxy } = await startProxiedControlPlane({ now: () => new Date(nowMs) }));
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  for (const name of ["n-a", "n-b"]) await join(name);
  for (const name of ["v-1", "v-2", "v-3"]) {
    await jsonOf(await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: 64 * 1024 }), 201);
  }
});
afterAll(() => fx?.dispose());

describe("the owner index", () => {
  it("gets a node's row from the attach, before the claim names the node", async () => {
    const { requests, stop } = recordTableRequests(proxy);
    await jsonOf(await fx.call("POST", "/api/v1/volumes/v-1/attach", { node: "n-a" }), 200);
    stop();
    const ownerWrite = requests.findIndex((r) => r.table.startsWith("owners"));
    const claim = requests.findIndex((r) => r.table.startsWith("volumes") && r.method === "PUT");
    expect(ownerWrite).toBeGreaterThanOrEqual(0);
    expect(ownerWrite).toBeLessThan(claim);
    expect(await ownedBy(fx.registry, "n-a")).toEqual(["v-1"]);
  });

  it("is read only once a pass found it complete: the scan before, the node's partition after", async () => {
    const before = recordTableRequests(proxy);
    expect((await desired("n-a")).attachments.map((a) => a.volume)).toEqual(["v-1"]);
    before.stop();
    const volumeQueries = (rs: typeof before.requests) => rs.filter((r) => r.table === "volumes()" || r.table === "volumes");
    expect(volumeQueries(before.requests).some((r) => r.method === "GET" && partitionOf(r.filter) === undefined && r.filter?.includes("ownerNode"))).toBe(true);

    await heartbeat("n-a", "n-b");
    await pass();
    expect((await readSweeperState(fx.registry))?.value.ownersIndexedAt).not.toBeNull();
    const after = recordTableRequests(proxy);
    expect((await desired("n-a")).attachments.map((a) => a.volume)).toEqual(["v-1"]);
    after.stop();
    const ownerQueries = after.requests.filter((r) => r.table.startsWith("owners"));
    expect(ownerQueries.map((r) => partitionOf(r.filter))).toEqual(["n-a"]);
    expect(after.requests.some((r) => r.filter?.includes("ownerNode"))).toBe(false);
    // Found complete once, the index stays so: the next fetch does not read the sweeper's state.
    expect(after.requests.filter((r) => r.table.startsWith("control"))).toHaveLength(1);
    const again = recordTableRequests(proxy);
    expect((await desired("n-a")).attachments.map((a) => a.volume)).toEqual(["v-1"]);
    again.stop();
    expect(again.requests.filter((r) => r.table.startsWith("control"))).toEqual([]);
    expect(reported).toEqual([]);
  });

  it("gains the rows a registry from before it lacks, from the sweeper", async () => {
    // v-2 attached as an older control plane would have: no index row.
    await jsonOf(await fx.call("POST", "/api/v1/volumes/v-2/attach", { node: "n-b" }), 200);
    await fx.registry.owners.deleteEntity("n-b", "v-2");
    expect(await ownedBy(fx.registry, "n-b")).toEqual([]);
    const done = await reconcileOwners(fx.registry, await volumes(fx.registry).list());
    expect(done).toEqual({ added: 1, removed: 0 });
    expect((await desired("n-b")).attachments.map((a) => a.volume)).toEqual(["v-2"]);
  });

  it("loses a row once the volume's record, written after it, names another owner or none", async () => {
    // The detach deletes its node's row itself.
    await jsonOf(await fx.call("POST", "/api/v1/volumes/v-1/detach", undefined), 200);
    expect(await ownedBy(fx.registry, "n-a")).toEqual([]);
    // A row written for a claim still on its way is newer than the record: it stays.
    await noteOwner(fx.registry, "n-b", "v-3");
    const done = await reconcileOwners(fx.registry, await volumes(fx.registry).list());
    expect(done).toEqual({ added: 0, removed: 0 });
    expect((await ownedBy(fx.registry, "n-b")).sort()).toEqual(["v-2", "v-3"]);
    // The desired state checks the record: v-3 is nobody's yet.
    expect((await desired("n-b")).attachments.map((a) => a.volume)).toEqual(["v-2"]);
    // Once v-3's record is written again, naming no owner, its row goes.
    await jsonOf(await fx.call("PATCH", "/api/v1/volumes/v-3", { failover: "manual" }), 200);
    expect(await reconcileOwners(fx.registry, await volumes(fx.registry).list())).toEqual({ added: 0, removed: 1 });
    expect(await ownedBy(fx.registry, "n-b")).toEqual(["v-2"]);
  });
});
