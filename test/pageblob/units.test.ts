/** Pure units of pageblob/: retry policy, classification, XML, locations, pools, extents. No network. */
import { describe, expect, it } from "vitest";
import { toExtents } from "../../agent/engine/pageblob-backend.ts";
import {
  codeForResponse,
  fromNetworkError,
  fromResponse,
  parseRetryAfter,
} from "../../agent/pageblob/classify.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import {
  DEV_ACCOUNT_KEY,
  parseBlobUrl,
  parseConnectionString,
  resolveBlob,
} from "../../agent/pageblob/location.ts";
import { PoolRegistry } from "../../agent/pageblob/pool.ts";
import { calculateDelay, DEFAULT_RETRY, shouldRetry } from "../../agent/pageblob/retry.ts";
import { parseErrorBody, parsePageList } from "../../agent/pageblob/xml.ts";

describe("retry policy", () => {
  const transient = new StorageError("Transient", "reset");
  it("retries Transient errors only, and only while attempts remain", () => {
    expect(shouldRetry(transient, 1)).toBe(true);
    expect(shouldRetry(transient, DEFAULT_RETRY.maxAttempts - 1)).toBe(true);
    expect(shouldRetry(transient, DEFAULT_RETRY.maxAttempts)).toBe(false);
    for (const code of ["Throttled", "LeaseLost", "BlobGone", "Forbidden", "Invalid"] as const) {
      expect(shouldRetry(new StorageError(code, "x"), 1)).toBe(false);
    }
    expect(shouldRetry(new Error("not ours"), 1)).toBe(false);
    expect(shouldRetry(transient, 1, { maxAttempts: 1 })).toBe(false);
  });

  it("grows exponentially up to the cap, with jitter drawn from the injected random", () => {
    const opts = { minDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5 };
    expect([1, 2, 3, 4, 5].map((a) => calculateDelay(a, opts, undefined, () => 1))).toEqual([
      100, 200, 400, 800, 1000,
    ]);
    // random()=0 takes off the whole jitter fraction, 0.5 half of it.
    expect(calculateDelay(3, opts, undefined, () => 0)).toBe(200);
    expect(calculateDelay(3, opts, undefined, () => 0.5)).toBe(300);
    expect(calculateDelay(3, { ...opts, jitter: 0 }, undefined, () => 0)).toBe(400);
  });

  it("honours Retry-After over the backoff, capped at the maximum", () => {
    const opts = { minDelayMs: 100, maxDelayMs: 5000, factor: 2, jitter: 1 };
    expect(calculateDelay(1, opts, 3000, () => 0)).toBe(3000);
    expect(calculateDelay(1, opts, 60_000, () => 0)).toBe(5000);
    expect(calculateDelay(1, opts, 0, () => 0.9)).toBe(0);
  });
});

describe("classification", () => {
  it("maps statuses and Azure codes to StorageError codes", () => {
    const table: Array<[number, string | undefined, string]> = [
      [503, "ServerBusy", "Throttled"],
      [500, "OperationTimedOut", "Throttled"],
      [503, "ServiceUnavailable", "Transient"],
      [500, "InternalError", "Transient"],
      [502, undefined, "Transient"],
      [408, undefined, "Transient"],
      [412, "LeaseIdMissing", "LeaseLost"],
      [412, "LeaseIdMismatchWithBlobOperation", "LeaseLost"],
      [412, "LeaseLost", "LeaseLost"],
      [412, "LeaseNotPresentWithBlobOperation", "LeaseLost"],
      [412, "ConditionNotMet", "LeaseLost"],
      [409, "LeaseAlreadyPresent", "LeaseLost"],
      [409, "LeaseIdMismatchWithLeaseOperation", "LeaseLost"],
      [409, "BlobAlreadyExists", "Invalid"],
      [404, "BlobNotFound", "BlobGone"],
      [404, "ContainerNotFound", "BlobGone"],
      [404, undefined, "BlobGone"],
      [403, "AuthenticationFailed", "Forbidden"],
      [403, "AuthorizationPermissionMismatch", "Forbidden"],
      [400, "InvalidHeaderValue", "Invalid"],
      [416, "InvalidRange", "Invalid"],
    ];
    for (const [status, azure, code] of table)
      expect([status, azure, codeForResponse(status, azure)]).toEqual([status, azure, code]);
  });

  it("keeps status, Azure code, Retry-After and request id", () => {
    const err = fromResponse(
      { status: 503, azureCode: "ServerBusy", retryAfter: "2", message: "busy", requestId: "r-1" },
      "Put Page 0+512",
    );
    expect(err).toMatchObject({
      code: "Throttled",
      status: 503,
      azureCode: "ServerBusy",
      retryAfterMs: 2000,
      requestId: "r-1",
    });
    expect(err.message).toBe("Put Page 0+512: ServerBusy (busy)");
  });

  it("treats network failures as Transient and undici argument errors as Invalid", () => {
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    expect(fromNetworkError(reset, "op")).toMatchObject({ code: "Transient", status: 0 });
    const wrapped = Object.assign(new Error("other side closed"), { cause: reset });
    expect(fromNetworkError(wrapped, "op").message).toContain("ECONNRESET");
    const bad = Object.assign(new Error("invalid"), { code: "UND_ERR_INVALID_ARG" });
    expect(fromNetworkError(bad, "op").code).toBe("Invalid");
    const same = new StorageError("LeaseLost", "x");
    expect(fromNetworkError(same, "op")).toBe(same);
  });

  it("parses Retry-After as seconds or as an HTTP date", () => {
    expect(parseRetryAfter("5")).toBe(5000);
    expect(parseRetryAfter(undefined)).toBeUndefined();
    expect(parseRetryAfter("soon")).toBeUndefined();
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:00:07 GMT", now)).toBe(7000);
    expect(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", now)).toBe(0);
  });
});

describe("XML", () => {
  it("parses page and clear ranges with inclusive ends, and the next marker", () => {
    const xml = `<?xml version="1.0" encoding="utf-8"?>
<PageList><PageRange><Start>0</Start><End>511</End></PageRange>
<ClearRange><Start>512</Start><End>1023</End></ClearRange>
<PageRange><Start>8796093022208</Start><End>8796093026303</End></PageRange>
<NextMarker>2!a&amp;b</NextMarker></PageList>`;
    expect(parsePageList(xml)).toEqual({
      pages: [
        { offset: 0, length: 512 },
        { offset: 8796093022208, length: 4096 },
      ],
      clears: [{ offset: 512, length: 512 }],
      nextMarker: "2!a&b",
    });
    expect(parsePageList("<PageList><NextMarker /></PageList>")).toEqual({
      pages: [],
      clears: [],
      nextMarker: undefined,
    });
    expect(
      parsePageList("<PageList><NextMarker></NextMarker></PageList>").nextMarker,
    ).toBeUndefined();
    expect(() => parsePageList("<Error/>")).toThrow(SyntaxError);
  });

  it("reads code and first message line of an error body", () => {
    const body = `<?xml version="1.0" encoding="utf-8"?><Error><Code>LeaseIdMissing</Code><Message>There is currently a lease on the blob &amp; no lease ID was specified.
RequestId:abc
Time:2025-01-01T00:00:00Z</Message></Error>`;
    expect(parseErrorBody(body)).toEqual({
      code: "LeaseIdMissing",
      message: "There is currently a lease on the blob & no lease ID was specified.",
    });
    expect(parseErrorBody("")).toEqual({});
  });
});

describe("locations", () => {
  it("splits host-style and path-style blob URLs", () => {
    expect(parseBlobUrl("https://acct.blob.core.windows.net/disks/a/b%20c.vhd?sv=1&sig=x")).toEqual(
      {
        origin: "https://acct.blob.core.windows.net",
        path: "/disks/a/b%20c.vhd",
        account: "acct",
        container: "disks",
        blob: "a/b c.vhd",
        sas: "sv=1&sig=x",
      },
    );
    expect(parseBlobUrl("http://127.0.0.1:10000/devstoreaccount1/disks/v1")).toMatchObject({
      origin: "http://127.0.0.1:10000",
      path: "/devstoreaccount1/disks/v1",
      account: "devstoreaccount1",
      container: "disks",
      blob: "v1",
      sas: undefined,
    });
    expect(() => parseBlobUrl("https://acct.blob.core.windows.net/disks")).toThrow(
      /container and a blob/,
    );
    expect(() => parseBlobUrl("ftp://x/y/z")).toThrow(/http/);
  });

  it("parses connection strings: explicit endpoint, account + suffix, development storage, SAS", () => {
    expect(
      parseConnectionString(
        `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${DEV_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;`,
      ),
    ).toEqual({
      accountName: "devstoreaccount1",
      accountKey: DEV_ACCOUNT_KEY,
      blobEndpoint: "http://127.0.0.1:10000/devstoreaccount1",
      sas: undefined,
    });
    expect(
      parseConnectionString(
        "AccountName=acct;AccountKey=a2V5==;EndpointSuffix=core.chinacloudapi.cn",
      ),
    ).toMatchObject({
      blobEndpoint: "https://acct.blob.core.chinacloudapi.cn",
      accountKey: "a2V5==",
    });
    expect(parseConnectionString("UseDevelopmentStorage=true")).toMatchObject({
      accountName: "devstoreaccount1",
      blobEndpoint: "http://127.0.0.1:10000/devstoreaccount1",
    });
    expect(
      parseConnectionString(
        "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=?sv=1&sig=y",
      ),
    ).toEqual({
      accountName: "acct",
      accountKey: undefined,
      blobEndpoint: "https://acct.blob.core.windows.net",
      sas: "sv=1&sig=y",
    });
    expect(() => parseConnectionString("AccountName=acct")).toThrow(/AccountKey/);
    expect(() => parseConnectionString("garbage")).toThrow(SyntaxError);
  });

  it("resolves container/blob under a connection string and checks the account of a URL", () => {
    const account = parseConnectionString(
      `AccountName=devstoreaccount1;AccountKey=${DEV_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1`,
    );
    expect(resolveBlob("disks/dir/v 1", account)).toMatchObject({
      origin: "http://127.0.0.1:10000",
      path: "/devstoreaccount1/disks/dir/v%201",
      container: "disks",
      blob: "dir/v 1",
    });
    expect(() => resolveBlob("https://other.blob.core.windows.net/d/v", account)).toThrow(
      /account other/,
    );
    expect(() => resolveBlob("disks", account)).toThrow(/container\/blob/);
    expect(() => resolveBlob("disks/v")).toThrow(/connection string/);
  });
});

describe("connection pools", () => {
  it("shares one pool per origin and closes it when the last blob lets go, once per lease", async () => {
    const pools = new PoolRegistry();
    const a = pools.acquire("http://127.0.0.1:10000/devstoreaccount1/c/a");
    const b = pools.acquire("http://127.0.0.1:10000");
    const other = pools.acquire("http://127.0.0.1:10001");
    expect(b.pool).toBe(a.pool);
    expect(other.pool).not.toBe(a.pool);
    expect(pools.size).toBe(2);
    await a.release();
    await a.release();
    expect(a.pool.closed).toBe(false);
    await b.release();
    expect(a.pool.closed).toBe(true);
    expect(pools.size).toBe(1);
    await other.release();
    expect(pools.size).toBe(0);
  });
});

describe("toExtents", () => {
  it("covers the window exactly, clipping ranges and merging adjacent ones", () => {
    expect(
      toExtents(4096, 16384, [
        { offset: 0, length: 8192 },
        { offset: 8192, length: 4096 },
        { offset: 16384, length: 65536 },
      ]),
    ).toEqual([
      { offset: 4096, length: 8192, hole: false, zero: false },
      { offset: 12288, length: 4096, hole: true, zero: true },
      { offset: 16384, length: 4096, hole: false, zero: false },
    ]);
    expect(toExtents(0, 1024, [])).toEqual([{ offset: 0, length: 1024, hole: true, zero: true }]);
    expect(toExtents(0, 0, [])).toEqual([]);
  });
});
