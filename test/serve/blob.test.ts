/**
 * `pagedisk serve` (the bundled binary) on a page blob in a real Azurite,
 * driven by qemu-io: lease handling, fencing by a lease break from another
 * client, a deleted blob, and throttling through a fault-injecting proxy.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BlobSASPermissions, BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";
import { type ServeProcess, startServe } from "../harness/serve.ts";
import { runTool } from "../harness/tools.ts";

const MiB = 1024 * 1024;

/** Run qemu-io commands against an NBD URI; returns its output (qemu-io reports errors there). */
async function qemuIo(uri: string, ...commands: string[]): Promise<string> {
  const args = ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), uri];
  const { stdout, stderr } = await runTool("qemu-io", args, { allowFailure: true });
  return stdout + stderr;
}

function failedEvent(serve: ServeProcess) {
  return serve.logs.find((l) => l.type === "volume-failed");
}

describe("pagedisk serve on Azurite", () => {
  let azurite: Azurite;
  let container: ContainerClient;
  let n = 0;

  beforeAll(async () => {
    azurite = await startAzurite();
    container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(
      "vols",
    );
    await container.create();
  });

  afterAll(async () => {
    await azurite?.dispose();
  });

  function blobUrl(name: string): string {
    return `${azurite.blobEndpoint}/vols/${name}`;
  }

  async function serveNew(size = "64MiB", via: (url: string) => string = (u) => u) {
    const name = `v${++n}.vhd`;
    const serve = await startServe(via(blobUrl(name)), ["--create", "--size", size], {
      PAGEDISK_STORAGE_CONNECTION_STRING: azurite.connectionString,
    });
    return { serve, blob: container.getPageBlobClient(name), name };
  }

  it("creates the blob, takes an infinite lease, serves data, releases the lease on SIGTERM", async () => {
    const { serve, blob } = await serveNew();
    const props = await blob.getProperties();
    expect(props.contentLength).toBe(64 * MiB);
    expect(props.leaseState).toBe("leased");
    expect(props.leaseDuration).toBe("infinite");

    const out = await qemuIo(serve.uri, "write -P 0x5a 1M 2M", "read -P 0x5a 1M 2M");
    expect(out).not.toMatch(/error|fail/i);
    expect(await serve.stop("SIGTERM"), JSON.stringify(serve.logs)).toBe(0);
    expect(serve.logs.some((l) => l.msg === "lease released"), JSON.stringify(serve.logs)).toBe(true);

    expect((await blob.getProperties()).leaseState).toBe("available");
    const data = await blob.downloadToBuffer(MiB, 2 * MiB);
    expect(data.every((b) => b === 0x5a)).toBe(true);
    // Holes stay holes: only the written range is allocated.
    const ranges = await blob.getPageRanges();
    // The SDK reports a range as its offset and (end - offset), end inclusive.
    expect(ranges.pageRange).toEqual([{ offset: MiB, count: 2 * MiB - 1 }]);
  });

  it("serves a SAS URL with no connection string; qemu-img converts in and compares equal", async () => {
    const name = `sas${++n}.vhd`;
    const blob = container.getPageBlobClient(name);
    await blob.create(8 * MiB);
    const sasUrl = await blob.generateSasUrl({
      permissions: BlobSASPermissions.parse("racw"),
      expiresOn: new Date(Date.now() + 3600_000),
    });
    const serve = await startServe(sasUrl, [], { PAGEDISK_STORAGE_CONNECTION_STRING: "" });
    const image = randomBytes(8 * MiB);
    const src = join(serve.dir, "src.raw");
    await writeFile(src, image);
    await runTool("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, serve.uri]);
    await runTool("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, serve.uri]);
    expect(await serve.stop()).toBe(0);
    expect((await blob.downloadToBuffer()).equals(image)).toBe(true);
  });

  it("refuses a blob someone else has leased, and changes nothing", async () => {
    const name = `held${++n}.vhd`;
    const blob = container.getPageBlobClient(name);
    await blob.create(MiB);
    await blob.getBlobLeaseClient().acquireLease(-1);
    await expect(
      startServe(blobUrl(name), [], { PAGEDISK_STORAGE_CONNECTION_STRING: azurite.connectionString }),
    ).rejects.toThrow(/leased by another writer/);
    expect((await blob.getProperties()).leaseState).toBe("leased");
  });

  it("fails a missing blob with a clear message", async () => {
    await expect(
      startServe(blobUrl("nope.vhd"), [], {
        PAGEDISK_STORAGE_CONNECTION_STRING: azurite.connectionString,
      }),
    ).rejects.toThrow(/no such blob or container/);
  });

  it("is fenced by a lease break: the next write gets EIO, nothing lands, serve exits 2", async () => {
    const { serve, blob } = await serveNew();
    expect(await qemuIo(serve.uri, "write -P 0x11 0 1M")).not.toMatch(/error/i);

    // Another writer takes over the blob the way the control plane does.
    await blob.getBlobLeaseClient().breakLease(0);
    const out = await qemuIo(serve.uri, "write -P 0x22 0 1M");
    expect(out).toMatch(/Input\/output error/);

    expect(await serve.exited).toBe(2);
    expect(failedEvent(serve)).toMatchObject({ type: "volume-failed", reason: "lease-lost" });
    const data = await blob.downloadToBuffer(0, MiB);
    expect(data.every((b) => b === 0x11)).toBe(true);
    await serve.stop();
  });

  it("fails with EIO when the blob is deleted", async () => {
    const { serve, blob } = await serveNew();
    expect(await qemuIo(serve.uri, "write -P 0x33 0 64k")).not.toMatch(/error/i);
    // serve holds the lease: an operator breaks it before the delete.
    await blob.getBlobLeaseClient().breakLease(0);
    await blob.delete();
    const out = await qemuIo(serve.uri, "write -P 0x44 0 64k");
    expect(out).toMatch(/Input\/output error/);
    expect(await serve.exited).toBe(2);
    expect(failedEvent(serve)).toMatchObject({ type: "volume-failed", reason: "blob-gone" });
    await serve.stop();
  });

  describe("throttling through a fault proxy", () => {
    let proxy: FaultProxy;

    beforeAll(async () => {
      proxy = await startFaultProxy(azurite.blobEndpoint);
    });
    afterAll(async () => {
      await proxy?.close();
    });

    it("turns several seconds of 503 ServerBusy into latency: no client error, data verifies", async () => {
      const { serve, blob } = await serveNew("64MiB", (url) => proxy.via(url));
      proxy.resetCounts();
      proxy.inject({ fault: { type: "busy" }, only: ["putPage"] });
      const writing = qemuIo(serve.uri, "write -P 0x77 0 8M", "read -P 0x77 0 8M");
      // Keep throttling until the volume has paused at least twice (>= 6 s with the 3 s pause).
      await proxy.waitFor(() => proxy.faulted("putPage") >= 3, 10_000);
      proxy.clear();
      const out = await writing;
      expect(out).not.toMatch(/error|fail/i);
      expect(out).toMatch(/wrote 8388608\/8388608 bytes/);

      const pauses = serve.logs.filter((l) => l.msg === "storage throttling");
      expect(pauses.length).toBeGreaterThan(0);
      expect(await serve.stop()).toBe(0);
      const data = await blob.downloadToBuffer(0, 8 * MiB);
      expect(data.every((b) => b === 0x77)).toBe(true);
    });
  });
});
