import { once } from "node:events";
import { access, readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { openPageBlob } from "../../agent/pageblob/connect.ts";
import { DEFAULT_RETRY } from "../../agent/pageblob/retry.ts";
import { type Azurite, freePort, startAzurite } from "../harness/azurite.ts";
import { instantClock, pattern } from "./fixture.ts";

const started: Azurite[] = [];
afterAll(() => Promise.all(started.map((a) => a.dispose())));

describe("Azurite harness", () => {
  it("stops and starts again on the same ports and data; down, it is a Transient failure", async () => {
    const az = await startAzurite({ table: true });
    started.push(az);
    expect(az.connectionString).toContain(`BlobEndpoint=${az.blobEndpoint}`);
    expect(az.tableEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1$/);
    const pb = openPageBlob("keep/disk", {
      connectionString: az.connectionString,
      clock: instantClock,
      retry: { ...DEFAULT_RETRY, maxAttempts: 2 },
    });
    try {
      const { BlobServiceClient } = await import("@azure/storage-blob");
      await BlobServiceClient.fromConnectionString(az.connectionString)
        .getContainerClient("keep")
        .create();
      await pb.create(65536);
      await pb.putPages(4096, pattern(4096, 1));

      await az.stop();
      expect(az.running).toBe(false);
      await expect(pb.read(4096, 4096)).rejects.toMatchObject({ code: "Transient" });

      await az.start();
      expect(Buffer.from(await pb.read(4096, 4096)).equals(pattern(4096, 1))).toBe(true);
      expect(await pb.pageRanges(0, 65536)).toEqual([{ offset: 4096, length: 4096 }]);
    } finally {
      await pb.close();
    }
  });

  it("dispose removes the data directory", async () => {
    const az = await startAzurite({ inMemory: true });
    await az.dispose();
    await expect(access(az.location)).rejects.toMatchObject({ code: "ENOENT" });
    expect(az.running).toBe(false);
  });

  it("chooses ports below the ephemeral range, where no client connect() takes its source port", async () => {
    const low = Number((await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")).split(/\s+/)[0]);
    const ports = await Promise.all(Array.from({ length: 8 }, () => freePort()));
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(20_000);
      expect(port).toBeLessThan(low);
      const srv = createServer().listen(port, "127.0.0.1");
      await once(srv, "listening");
      srv.close();
      await once(srv, "close");
    }
  });

  it("fails at once, with Azurite's EADDRINUSE, when a fixed port is taken (chosen ports are chosen again)", async () => {
    const port = await freePort();
    const squatter = createServer().listen(port, "127.0.0.1");
    await once(squatter, "listening");
    try {
      await expect(startAzurite({ blobPort: port, inMemory: true })).rejects.toThrow(/EADDRINUSE/);
    } finally {
      squatter.close();
      await once(squatter, "close");
    }
  });
});
