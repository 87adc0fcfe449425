/**
 * The delegation key cache against Azurite's real Get User Delegation Key
 * (HTTPS, `--oauth basic`): one request per account however many callers,
 * a key reused until it nears its end, a failure shared and then forgotten.
 */
import { BlobServiceClient, type UserDelegationKey } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserDelegationKeys } from "../../../functions/storage/user-delegation-keys.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";
import { makeTestCertificate, type TestCertificate, trustInThisProcess } from "./https.ts";
import { testIdentity } from "./token.ts";

const HOUR = 60 * 60 * 1000;
const T0 = new Date(Date.UTC(2025, 0, 1));

let cert: TestCertificate;
let azurite: Azurite;
let service: BlobServiceClient;

beforeAll(async () => {
  cert = await makeTestCertificate();
  trustInThisProcess(cert.pem);
  azurite = await startAzurite({
    inMemory: true,
    tls: { cert: cert.cert, key: cert.key },
    oauth: "basic",
  });
  service = new BlobServiceClient(azurite.blobEndpoint, testIdentity());
});
afterAll(async () => {
  await azurite?.dispose();
  await cert?.dispose();
});

/** The account's real key request, counted. */
function counted() {
  const asked: Array<{ startsOn: Date; expiresOn: Date }> = [];
  const fetch = (startsOn: Date, expiresOn: Date): Promise<UserDelegationKey> => {
    asked.push({ startsOn, expiresOn });
    return service.getUserDelegationKey(startsOn, expiresOn);
  };
  return { asked, fetch };
}

const at = (ms: number) => new Date(T0.getTime() + ms);

describe("user delegation keys", () => {
  it("concurrent callers share one request; the key is valid for the lifetime asked", async () => {
    const keys = new UserDelegationKeys({ lifetimeMs: 6 * HOUR, renewBeforeMs: 1.25 * HOUR });
    const { asked, fetch } = counted();
    const got = await Promise.all(Array.from({ length: 10 }, () => keys.get("a", T0, fetch)));
    expect(asked).toHaveLength(1);
    expect(new Set(got.map((k) => k.value)).size).toBe(1);
    expect(got[0]!.signedExpiresOn.getTime()).toBe(at(6 * HOUR).getTime());
    expect(got[0]!.signedStartsOn.getTime()).toBeLessThan(T0.getTime());
  });

  it("reuses the key while more than renewBefore remains, then renews it once", async () => {
    const keys = new UserDelegationKeys({ lifetimeMs: 6 * HOUR, renewBeforeMs: 1.25 * HOUR });
    const { asked, fetch } = counted();
    const first = await keys.get("a", T0, fetch);
    expect(await keys.get("a", at(4.7 * HOUR), fetch)).toBe(first);
    expect(asked).toHaveLength(1);
    // 1.25 h left is not enough for a 1 h SAS plus margin: renew, and share the renewal.
    const renewed = await Promise.all([
      keys.get("a", at(4.75 * HOUR), fetch),
      keys.get("a", at(4.75 * HOUR), fetch),
    ]);
    expect(asked).toHaveLength(2);
    expect(renewed[0]).toBe(renewed[1]);
    expect(renewed[0]!.signedExpiresOn.getTime()).toBe(at(10.75 * HOUR).getTime());
  });

  it("keeps one key per account", async () => {
    const keys = new UserDelegationKeys({ lifetimeMs: 6 * HOUR, renewBeforeMs: HOUR });
    const { asked, fetch } = counted();
    await keys.get("a", T0, fetch);
    await keys.get("b", T0, fetch);
    await keys.get("a", T0, fetch);
    expect(asked).toHaveLength(2);
  });

  it("a failed request reaches its waiters and is not cached", async () => {
    const keys = new UserDelegationKeys({ lifetimeMs: 6 * HOUR, renewBeforeMs: HOUR });
    const refusing = new BlobServiceClient(azurite.blobEndpoint, {
      getToken: async () => ({ token: "not-a-jwt", expiresOnTimestamp: Date.now() + HOUR }),
    });
    let calls = 0;
    const failing = (s: Date, e: Date) => {
      calls++;
      return refusing.getUserDelegationKey(s, e);
    };
    const both = await Promise.allSettled([keys.get("a", T0, failing), keys.get("a", T0, failing)]);
    expect(both.map((o) => o.status)).toEqual(["rejected", "rejected"]);
    expect(calls).toBe(1);
    const { asked, fetch } = counted();
    await keys.get("a", T0, fetch);
    expect(asked).toHaveLength(1);
  });

  it("refuses a policy that would renew before the key even starts", () => {
    expect(() => new UserDelegationKeys({ lifetimeMs: HOUR, renewBeforeMs: HOUR })).toThrow(
      RangeError,
    );
  });
});
