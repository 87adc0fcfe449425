/**
 * Which connection-string pools can sign a replica SAS, decided without a
 * request: signing is local. That the storage service honours the SAS is
 * proven over Azurite in api/nodes.test.ts.
 */
import { describe, expect, it } from "vitest";
import type { PoolLocation } from "../../../functions/storage/pool-container.ts";
import { replicaSasExpiry, signedReplicaUrl } from "../../../functions/storage/replica-sas.ts";

const NOW = new Date(Date.UTC(2025, 0, 1));
const EXPIRES = replicaSasExpiry(NOW, 60 * 60 * 1000);

function pool(connectionString: string): PoolLocation {
  return { name: "p1", container: "disks", authKind: "connectionString", connectionString };
}

async function sign(connectionString: string, uri: string): Promise<URL | undefined> {
  const url = await signedReplicaUrl(pool(connectionString), "v1", "r0", uri, NOW, EXPIRES);
  return url === undefined ? undefined : new URL(url);
}

describe("signedReplicaUrl for a connection-string pool", () => {
  it("signs with the account key: read and write on that one blob, until the expiry", async () => {
    const url = await sign(
      "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0PT0=;EndpointSuffix=core.windows.net",
      "https://acct.blob.core.windows.net/disks/v1/r0",
    );
    expect(url?.pathname).toBe("/disks/v1/r0");
    expect(url?.searchParams.get("sr")).toBe("b");
    expect(url?.searchParams.get("sp")).toBe("rw");
    expect(url?.searchParams.get("spr")).toBe("https");
    expect(url?.searchParams.get("se")).toBe(EXPIRES.toISOString().replace(".000Z", "Z"));
    expect(url?.searchParams.get("sig")).toMatch(/^[A-Za-z0-9+/]+=*$/);
  });

  it("signs for Azurite's development account, over plain HTTP too", async () => {
    const url = await sign(
      "UseDevelopmentStorage=true",
      "http://127.0.0.1:10000/devstoreaccount1/disks/v1/r0",
    );
    expect(url?.searchParams.get("spr")).toBe("https,http");
    expect(url?.searchParams.get("sig")).toEqual(expect.any(String));
  });

  it("cannot sign with a SAS connection string, which it must not hand on", async () => {
    expect(
      await sign(
        "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=2024-08-04&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=abc",
        "https://acct.blob.core.windows.net/disks/v1/r0",
      ),
    ).toBeUndefined();
  });
});
