/**
 * A hostile node keeps what it was given and tries to use it after it has
 * lost the volume: the raw REST calls a compromised agent would make with
 * the SAS URL from its desired state (break the lease, take its own, write
 * without a lease, resize, snapshot, delete, read, rewrite the metadata).
 * Every one must fail once the volume's writer has changed (a forced detach
 * and an attach elsewhere; a re-attach to the same node; the sweeper's
 * fencing of a LOST node) or the node has been removed. Azurite applies a
 * stored access policy's change at once; Azure within 30 s (the README's
 * security section), which policy-propagation.test.ts checks under an
 * emulation of Azure's timing.
 *
 * Each case first proves the same calls with the same URL worked while the
 * node was the writer, so a refusal is the revocation and not a malformed
 * call; and the rightful writer's URL keeps working afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { DesiredAttachment } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { POLICY_PROPAGATION_MS, UNBOUND_SAS_LIFETIME_MS } from "../../../functions/arbiter/desired-state.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import { type SweepReport, sweep } from "../../../functions/health/sweep.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { agentNodes, aheadOfRealTime, STEPPED_POLICY } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";
import { call, hostileCalls, page, REFUSED } from "./hostile-calls.ts";

const SIZE = 64 * 1024;
let fx: ControlPlaneFixture;
let nowMs = aheadOfRealTime();
let token: IssuedToken;
const { join, heartbeat, desired } = agentNodes(
  () => fx,
  () => token.token,
  () => new Date(nowMs),
);

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(nowMs), detachDrainMs: 0 });
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(
    await fx.call("POST", "/api/v1/tokens", { expiresInSeconds: 3600, description: "hostile" }),
    201,
  );
  for (const name of ["rogue", "honest", "witness"]) await join(name);
});
afterAll(() => fx?.dispose());

/**
 * The volume's only replica URL as `node`'s desired state gives it, fetched
 * once its policy is surely in effect on Azure (desired-state.ts gives a
 * short unbound SAS before: see the last test).
 */
async function urlOf(node: string, volume: string): Promise<{ url: string; attachment: DesiredAttachment }> {
  nowMs += POLICY_PROPAGATION_MS;
  const a = (await desired(node)).attachments.find((x) => x.volume === volume);
  expect(a, `${node} is told to serve ${volume}`).toBeDefined();
  const url = a!.replicas[0]!.url;
  expect(url).toEqual(expect.any(String));
  return { url: url!, attachment: a! };
}

async function create(name: string): Promise<void> {
  expect((await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: SIZE })).status).toBe(201);
}

async function attach(name: string, node: string): Promise<Attachment> {
  return jsonOf<Attachment>(await fx.call("POST", `/api/v1/volumes/${name}/attach`, { node }), 200);
}

async function volume(name: string): Promise<Volume> {
  return jsonOf<Volume>(await fx.call("GET", `/api/v1/volumes/${name}`), 200);
}

/** The replica blob as the account owner sees it. */
async function blobOf(name: string) {
  const v = await volume(name);
  const r = v.status.replicas[0]!;
  return fx.blobs
    .getContainerClient(replicaContainerName("pagedisk", r.id))
    .getPageBlobClient(`${v.name}/${r.id}`);
}

/** While `rogue` is the writer: the calls an agent needs work with its URL (so a later 403 means revoked). */
async function provesTheUrlWorks(url: string, leaseId: string): Promise<void> {
  const put = await call(
    url,
    "PUT",
    "comp=page",
    {
      "x-ms-page-write": "update",
      "x-ms-range": "bytes=0-511",
      "content-length": "512",
      "x-ms-lease-id": leaseId,
    },
    page(0x11),
  );
  expect(put).toBe(201);
  expect(await call(url, "GET", "", { "x-ms-range": "bytes=0-511" })).toBe(206);
}

/** The blob is whole and still leased by the control plane's choice: nothing the rogue tried landed. */
async function untouched(name: string, leaseId: string | null): Promise<void> {
  const blob = await blobOf(name);
  const props = await blob.getProperties();
  expect(props.contentLength).toBe(SIZE);
  if (leaseId === null) expect(props.leaseState).not.toBe("leased");
  else expect(props.leaseState).toBe("leased");
  const data = await blob.downloadToBuffer(0, 512);
  expect(data.every((b) => b === 0x11 || b === 0x22)).toBe(true);
  expect(props.metadata?.pagediskoffline).toBeUndefined();
  const snapshots = [];
  for await (const b of fx.blobs
    .getContainerClient(blob.containerName)
    .listBlobsFlat({ includeSnapshots: true })) {
    if (b.snapshot) snapshots.push(b.snapshot);
  }
  expect(snapshots).toEqual([]);
}

describe("a node that lost its volume cannot use the storage access it was given", () => {
  it("after a forced detach and an attach elsewhere: every call refused; the new writer's still works", async () => {
    await create("h-moved");
    const first = await attach("h-moved", "rogue");
    const { url } = await urlOf("rogue", "h-moved");
    await provesTheUrlWorks(url, first.leaseId);

    expect((await fx.call("POST", "/api/v1/volumes/h-moved/detach?force=true")).status).toBe(200);
    const second = await attach("h-moved", "honest");
    expect(await hostileCalls(url)).toEqual(REFUSED);

    const { url: rightful } = await urlOf("honest", "h-moved");
    const put = await call(
      rightful,
      "PUT",
      "comp=page",
      {
        "x-ms-page-write": "update",
        "x-ms-range": "bytes=0-511",
        "content-length": "512",
        "x-ms-lease-id": second.leaseId,
      },
      page(0x22),
    );
    expect(put).toBe(201);
    await untouched("h-moved", second.leaseId);
  });

  it("after a detach alone: nobody holds a usable SAS", async () => {
    await create("h-detached");
    const first = await attach("h-detached", "rogue");
    const { url } = await urlOf("rogue", "h-detached");
    await provesTheUrlWorks(url, first.leaseId);
    expect((await fx.call("POST", "/api/v1/volumes/h-detached/detach?force=true")).status).toBe(200);
    expect(await hostileCalls(url)).toEqual(REFUSED);
    await untouched("h-detached", null);
  });

  it("after a re-attach to the same node: the earlier epoch's SAS is dead, the new one works", async () => {
    await create("h-again");
    const first = await attach("h-again", "rogue");
    const { url: old } = await urlOf("rogue", "h-again");
    await provesTheUrlWorks(old, first.leaseId);
    expect((await fx.call("POST", "/api/v1/volumes/h-again/detach?force=true")).status).toBe(200);
    const second = await attach("h-again", "rogue");
    expect(second.epoch).toBeGreaterThan(first.epoch);
    const { url: fresh } = await urlOf("rogue", "h-again");
    expect(await hostileCalls(old)).toEqual(REFUSED);
    await provesTheUrlWorks(fresh, second.leaseId);
    await untouched("h-again", second.leaseId);
  });

  it("after the node is removed: every call refused", async () => {
    await join("leaver");
    await create("h-removed");
    const first = await attach("h-removed", "leaver");
    const { url } = await urlOf("leaver", "h-removed");
    await provesTheUrlWorks(url, first.leaseId);
    expect((await fx.call("POST", "/api/v1/volumes/h-removed/detach?force=true")).status).toBe(200);
    expect((await fx.call("DELETE", "/api/v1/nodes/leaver")).status).toBe(204);
    expect(await hostileCalls(url)).toEqual(REFUSED);
    await untouched("h-removed", null);
  });

  it("after the sweeper fences a LOST node and fails its volume over: every call refused", async () => {
    await join("silent");
    await create("h-lost");
    const first = await attach("h-lost", "silent");
    const { url } = await urlOf("silent", "h-lost");
    await provesTheUrlWorks(url, first.leaseId);
    // Everyone else beats; `silent` does not (a hostile node need not stop writing to stop beating).
    let report: SweepReport | undefined;
    for (let t = 0; t < 16 && !report?.failedOver.includes("h-lost"); t++) {
      nowMs += 5_000;
      await heartbeat("witness", "honest", "rogue");
      report = await sweep(
        controlPlane({ registry: fx.registry, now: () => new Date(nowMs), report: fx.cp.report }),
        STEPPED_POLICY,
        {
          wait: async (ms) => {
            nowMs += ms;
            await heartbeat("witness", "honest", "rogue");
          },
        },
      );
    }
    expect(report?.failedOver).toContain("h-lost");
    const moved = await volume("h-lost");
    expect(moved.status.ownerNode).not.toBe("silent");
    expect(await hostileCalls(url)).toEqual(REFUSED);
    expect(fx.reported).toEqual([]);
  });
});

describe("the first seconds of a writer, while Azure may not apply its policy yet", () => {
  it("gets a short SAS of its own, not bound to the policy; once the policy is surely in effect, a bound one", async () => {
    await create("h-young");
    const a = await attach("h-young", "honest");
    const young = (await desired("honest")).attachments.find((x) => x.volume === "h-young")!;
    const early = new URL(young.replicas[0]!.url!);
    expect(early.searchParams.get("si")).toBeNull();
    expect(early.searchParams.get("sp")).toBe("rw");
    const lifetime = Date.parse(young.sasExpiresAt) - nowMs;
    expect(lifetime).toBeGreaterThan(0);
    expect(lifetime).toBeLessThanOrEqual(UNBOUND_SAS_LIFETIME_MS);

    const { url, attachment } = await urlOf("honest", "h-young");
    expect(new URL(url).searchParams.get("si")).toBe(a.leaseId);
    expect(new URL(url).searchParams.get("sp")).toBeNull();
    expect(Date.parse(attachment.sasExpiresAt) - nowMs).toBeGreaterThan(UNBOUND_SAS_LIFETIME_MS);
  });
});
