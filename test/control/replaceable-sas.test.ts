/**
 * SAS refresh without a reopen: a PageBlob whose SAS source is replaced
 * while it is open uses the new token from the next request on. Against
 * Azurite, which refuses an expired SAS as Azure does.
 */
import {
  BlobSASPermissions,
  BlobServiceClient,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { afterAll, beforeAll, expect, it } from "vitest";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { parseBlobUrl } from "../../agent/pageblob/location.ts";
import { PageBlob } from "../../agent/pageblob/page-blob.ts";
import { ReplaceableSas } from "../../agent/pageblob/sas.ts";
import { BlobTransport } from "../../agent/pageblob/transport.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";

let azurite: Azurite;
let url: string;

beforeAll(async () => {
  azurite = await startAzurite({ inMemory: true });
  const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("disks");
  await container.create();
  const blob = container.getPageBlobClient("vol/replica");
  await blob.create(64 * 1024);
  url = blob.url;
});
afterAll(() => azurite?.dispose());

function sas(expiresOn: Date): string {
  return generateBlobSASQueryParameters(
    {
      containerName: "disks",
      blobName: "vol/replica",
      permissions: BlobSASPermissions.parse("rw"),
      startsOn: new Date(Date.now() - 10 * 60_000),
      expiresOn,
      protocol: SASProtocol.HttpsAndHttp,
    },
    new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
  ).toString();
}

it("a request after replacing an expired SAS succeeds, on the same open blob", async () => {
  const source = new ReplaceableSas(`?${sas(new Date(Date.now() - 60_000))}`);
  const blob = new PageBlob(new BlobTransport(parseBlobUrl(url), source));
  try {
    const refused = await blob.properties().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(StorageError);
    expect((refused as StorageError).code).toBe("Forbidden");

    source.replace(sas(new Date(Date.now() + 60 * 60_000)));
    await blob.putPages(512, new Uint8Array(512).fill(9));
    expect(Buffer.from(await blob.read(512, 512))).toEqual(Buffer.alloc(512, 9));
  } finally {
    await blob.close();
  }
});
