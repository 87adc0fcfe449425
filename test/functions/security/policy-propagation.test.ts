/**
 * The storage access of writers, under Azure's timing of stored access
 * policies rather than Azurite's. Azure takes up to 30 s to apply a change
 * of a container's policies, both ways: a SAS bound to a new policy is
 * refused (403) for a while, and one bound to a removed policy goes on
 * working for a while. Azurite applies every change at once, so the pool
 * here is reached through the fault proxy's `azurePolicies` emulation, with
 * a window of a few seconds of real time instead of 30.
 *
 * The control plane's clock runs near the real time (so the proxy's checks
 * of each SAS's own start and end pass) and jumps 35 s where the design
 * waits for a policy to take effect (desired-state.ts); the policy itself
 * ages in real time, so a test that needs it in effect waits on the proxy
 * for it.
 */
import { generateBlobSASQueryParameters, StorageSharedKeyCredential } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Attachment } from "../../../contract/attachment.ts";
import type { DesiredState } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import type { Volume } from "../../../contract/volume.ts";
import { POLICY_PROPAGATION_MS } from "../../../functions/arbiter/desired-state.ts";
import { replicaContainerName } from "../../../functions/storage/replica-container.ts";
import { type FaultProxy, startFaultProxy } from "../../harness/fault-proxy.ts";
import { agentNodes } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";
import { call, hostileCalls, page, putFirstPage, REFUSED } from "./hostile-calls.ts";

/** How long the emulated service takes to apply a change of policies: real time, short for the test. */
const PROPAGATION_MS = 3_000;
const CONTAINER = "pp-disks";
const SIZE = 64 * 1024;
const FIRST_PAGE = { "x-ms-range": "bytes=0-511" };

let fx: ControlPlaneFixture;
let proxy: FaultProxy;
/** How far the control plane's clock is ahead of the real time. */
let aheadMs = 0;
let token: IssuedToken;
const { join, desired } = agentNodes(
  () => fx,
  () => token.token,
  () => new Date(Date.now() + aheadMs),
);

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date(Date.now() + aheadMs), detachDrainMs: 0 });
  proxy = await startFaultProxy(fx.azurite.blobEndpoint, {
    azurePolicies: { propagationMs: PROPAGATION_MS, accountKey: fx.azurite.accountKey },
  });
  await fx.addPool("p1", CONTAINER, proxy.blobEndpoint);
  token = await jsonOf<IssuedToken>(
    await fx.call("POST", "/api/v1/tokens", { expiresInSeconds: 3600, description: "propagation" }),
    201,
  );
  for (const name of ["writer", "rogue", "honest"]) await join(name);
});
afterAll(async () => {
  await proxy?.close();
  await fx?.dispose();
});

async function create(name: string): Promise<void> {
  expect((await fx.call("POST", "/api/v1/volumes", { name, sizeBytes: SIZE })).status).toBe(201);
}

async function attach(name: string, node: string): Promise<Attachment> {
  return jsonOf<Attachment>(await fx.call("POST", `/api/v1/volumes/${name}/attach`, { node }), 200);
}

/** The container of the volume's only replica, and its blob as the account owner sees it. */
async function replicaOf(name: string) {
  const v = await jsonOf<Volume>(await fx.call("GET", `/api/v1/volumes/${name}`), 200);
  const r = v.status.replicas[0]!;
  const container = replicaContainerName(CONTAINER, r.id);
  return { container, blob: fx.blobs.getContainerClient(container).getPageBlobClient(`${name}/${r.id}`) };
}

/** The only replica URL `node`'s desired state gives for `volume` now. */
async function urlFor(node: string, volume: string): Promise<string> {
  const state: DesiredState = await desired(node);
  const url = state.attachments.find((a) => a.volume === volume)?.replicas[0]?.url;
  expect(url, `${node} is told where ${volume} is`).toEqual(expect.any(String));
  expect(new URL(url!).origin, "the pool is reached through the emulation").toBe(proxy.origin);
  return url!;
}

describe("a writer's storage access under Azure's policy propagation", () => {
  it("a volume attached at once: the writer's first SAS works at once and its write lands; the bound one once the policy is in effect", async () => {
    await create("pp-young");
    const { leaseId } = await attach("pp-young", "writer");
    const { container, blob } = await replicaOf("pp-young");

    // The policy named after the lease was set a moment ago: Azure would refuse a SAS bound to it.
    const first = await urlFor("writer", "pp-young");
    expect(await putFirstPage(first, page(0x11), leaseId)).toBe(201);
    expect(await blob.downloadToBuffer(0, 512)).toEqual(Buffer.from(page(0x11)));
    expect(new URL(first).searchParams.get("si")).toBeNull();

    // 35 s later on the control plane's clock it binds; the policy's own age is real time.
    aheadMs += POLICY_PROPAGATION_MS;
    const bound = await urlFor("writer", "pp-young");
    expect(new URL(bound).searchParams.get("si")).toBe(leaseId);
    const tooEarly = await call(bound, "GET", "", FIRST_PAGE);
    expect(proxy.policyInEffect(container, leaseId), "that read was inside the window").toBe(false);
    expect(tooEarly).toBe(403);

    await proxy.policySettled(container, leaseId);
    expect(proxy.policyInEffect(container, leaseId)).toBe(true);
    expect(await putFirstPage(bound, page(0x22), leaseId)).toBe(201);
    expect(await blob.downloadToBuffer(0, 512)).toEqual(Buffer.from(page(0x22)));
    expect(fx.reported).toEqual([]);
  });

  it("fencing: the old writer's bound SAS still works inside the window, as on Azure; after it every hostile call fails", async () => {
    await create("pp-moved");
    const old = await attach("pp-moved", "rogue");
    const { container, blob } = await replicaOf("pp-moved");
    aheadMs += POLICY_PROPAGATION_MS;
    const url = await urlFor("rogue", "pp-moved");
    expect(new URL(url).searchParams.get("si")).toBe(old.leaseId);
    await proxy.policySettled(container, old.leaseId);
    expect(await putFirstPage(url, page(0x11), old.leaseId)).toBe(201);

    expect((await fx.call("POST", "/api/v1/volumes/pp-moved/detach?force=true")).status).toBe(200);
    const fresh = await attach("pp-moved", "honest");
    const rightful = await urlFor("honest", "pp-moved");
    // Inside the window the removed policy still holds: the old SAS reads; the lease stops an
    // honest old writer's write, but a hostile one can break the new writer's lease, and the
    // new writer's next write then fails, visibly (the README's security section).
    const inside = {
      read: await call(url, "GET", "", FIRST_PAGE),
      writeWithOldLease: await putFirstPage(url, page(0xee), old.leaseId),
      breakLease: await call(url, "PUT", "comp=lease", {
        "x-ms-lease-action": "break",
        "x-ms-lease-break-period": "0",
      }),
      newWritersWrite: await putFirstPage(rightful, page(0x22), fresh.leaseId),
    };
    expect(proxy.policyInEffect(container, old.leaseId), "those calls were inside the window").toBe(true);
    expect(inside).toEqual({ read: 206, writeWithOldLease: 412, breakLease: 202, newWritersWrite: 412 });

    await proxy.policySettled(container, old.leaseId);
    expect(proxy.policyInEffect(container, old.leaseId)).toBe(false);
    expect(await hostileCalls(url)).toEqual(REFUSED);
    const props = await blob.getProperties();
    expect(props.contentLength).toBe(SIZE);
    expect(await blob.downloadToBuffer(0, 512)).toEqual(Buffer.from(page(0x11)));
    expect(fx.reported).toEqual([]);
  });
});

describe("the emulation itself", () => {
  const key = () => new StorageSharedKeyCredential(fx.azurite.accountName, fx.azurite.accountKey);

  /** A SAS bound to policy `id` on the blob of `name`, signed with the account key, through the proxy. */
  async function boundUrl(name: string, id: string, startsOn: Date, expiresOn: Date): Promise<string> {
    const { container, blob } = await replicaOf(name);
    const sas = generateBlobSASQueryParameters(
      { containerName: container, blobName: blob.name, identifier: id, startsOn, expiresOn },
      key(),
    );
    return proxy.via(`${blob.url}?${sas}`);
  }

  it("refuses a bound SAS outside its own start and end, which Azurite alone accepts", async () => {
    await create("pp-times");
    const { leaseId } = await attach("pp-times", "writer");
    const { container } = await replicaOf("pp-times");
    await proxy.policySettled(container, leaseId);
    const now = Date.now();
    const ended = await boundUrl("pp-times", leaseId, new Date(now - 600_000), new Date(now - 60_000));
    const notYet = await boundUrl("pp-times", leaseId, new Date(now + 600_000), new Date(now + 900_000));
    const current = await boundUrl("pp-times", leaseId, new Date(now - 60_000), new Date(now + 600_000));
    const direct = (url: string) => url.replace(proxy.origin, new URL(fx.azurite.blobEndpoint).origin);
    expect(await call(direct(ended), "GET", "", FIRST_PAGE)).toBe(206);
    expect(await call(ended, "GET", "", FIRST_PAGE)).toBe(403);
    expect(await call(notYet, "GET", "", FIRST_PAGE)).toBe(403);
    expect(await call(current, "GET", "", FIRST_PAGE)).toBe(206);
    const res = await fetch(ended, { headers: { "x-ms-version": "2021-08-06", ...FIRST_PAGE } });
    expect(res.headers.get("x-ms-error-code")).toBe("AuthenticationFailed");
    expect(await res.text()).toContain("<Code>AuthenticationFailed</Code>");
  });

  it("lets a removed policy's SAS through only while the removal propagates, and only as signed", async () => {
    await create("pp-forged");
    const { leaseId } = await attach("pp-forged", "writer");
    const { container } = await replicaOf("pp-forged");
    await proxy.policySettled(container, leaseId);
    const now = Date.now();
    const url = await boundUrl("pp-forged", leaseId, new Date(now - 60_000), new Date(now + 600_000));
    // The same SAS with a later end than the one signed: Azurite would never see it.
    const later = new Date(now + 3_600_000).toISOString().replace(/\.\d+Z$/, "Z");
    const forged = url.replace(/([?&])se=[^&]*/, `$1se=${encodeURIComponent(later)}`);
    expect(forged).not.toBe(url);
    expect((await fx.call("POST", "/api/v1/volumes/pp-forged/detach?force=true")).status).toBe(200);
    const inside = {
      genuine: await call(url, "GET", "", FIRST_PAGE),
      forged: await call(forged, "GET", "", FIRST_PAGE),
    };
    expect(proxy.policyInEffect(container, leaseId), "those calls were inside the window").toBe(true);
    expect(inside).toEqual({ genuine: 206, forged: 403 });
    await proxy.policySettled(container, leaseId);
    expect(await call(url, "GET", "", FIRST_PAGE)).toBe(403);
  });
});
