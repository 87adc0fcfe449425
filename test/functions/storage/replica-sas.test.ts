/**
 * Which connection-string pools can sign a replica SAS, decided without a
 * request: signing is local. That the storage service honours the SAS is
 * proven over Azurite in api/nodes.test.ts.
 */
import { describe, expect, it } from "vitest";
import type { PoolLocation } from "../../../functions/storage/pool-container.ts";
import {
  type ReplicaAccess,
  replicaSasExpiry,
  signedReplicaUrl,
} from "../../../functions/storage/replica-sas.ts";

const NOW = new Date(Date.UTC(2025, 0, 1));
const EXPIRES = replicaSasExpiry(NOW, 15 * 60 * 1000);

function pool(connectionString: string): PoolLocation {
  return { name: "p1", container: "disks", authKind: "connectionString", connectionString };
}

async function sign(
  connectionString: string,
  uri: string,
  access: ReplicaAccess = { writer: "lease-1" },
): Promise<URL | undefined> {
  const url = await signedReplicaUrl(pool(connectionString), "v1", "r0", uri, NOW, EXPIRES, access);
  return url === undefined ? undefined : new URL(url);
}

describe("signedReplicaUrl for a connection-string pool", () => {
  it("signs a writer's SAS with the account key: that one blob, bound to its lease's policy, until the expiry", async () => {
    const url = await sign(
      "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0PT0=;EndpointSuffix=core.windows.net",
      "https://acct.blob.core.windows.net/disks-r0/v1/r0",
    );
    expect(url?.pathname).toBe("/disks-r0/v1/r0");
    expect(url?.searchParams.get("sr")).toBe("b");
    // The permissions are the policy's (read and write): a SAS may not repeat them.
    expect(url?.searchParams.get("si")).toBe("lease-1");
    expect(url?.searchParams.get("sp")).toBeNull();
    expect(url?.searchParams.get("spr")).toBe("https");
    expect(url?.searchParams.get("se")).toBe(EXPIRES.toISOString().replace(".000Z", "Z"));
    expect(url?.searchParams.get("sig")).toMatch(/^[A-Za-z0-9+/]+=*$/);
  });

  it("signs a copy's source read-only, with no policy", async () => {
    const url = await sign(
      "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0PT0=;EndpointSuffix=core.windows.net",
      "https://acct.blob.core.windows.net/disks-r0/v1/r0",
      "read",
    );
    expect(url?.searchParams.get("sp")).toBe("r");
    expect(url?.searchParams.get("si")).toBeNull();
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
