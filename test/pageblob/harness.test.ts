import { access } from "node:fs/promises";
import { afterAll, describe, expect, it } from "vitest";
import { openPageBlob } from "../../agent/pageblob/connect.ts";
import { DEFAULT_RETRY } from "../../agent/pageblob/retry.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
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
});
