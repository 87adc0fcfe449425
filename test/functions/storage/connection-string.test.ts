import { describe, expect, it } from "vitest";
import {
  accountOf,
  allowsPlainHttp,
  connectionFields,
  maskConnectionString,
} from "../../../functions/storage/connection-string.ts";

describe("maskConnectionString", () => {
  it("hides account keys and SAS tokens, whatever their case, and keeps the rest", () => {
    expect(
      maskConnectionString(
        "DefaultEndpointsProtocol=https;AccountName=acct;accountkey=c2VjcmV0PT0=;EndpointSuffix=core.windows.net;",
      ),
    ).toBe(
      "DefaultEndpointsProtocol=https;AccountName=acct;accountkey=***;EndpointSuffix=core.windows.net",
    );
    expect(
      maskConnectionString(
        "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=1&sig=abc",
      ),
    ).toBe("BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=***");
  });

  it("hides a field it cannot parse rather than show it", () => {
    expect(maskConnectionString("AccountName=acct;c2VjcmV0")).toBe("AccountName=acct;c2VjcmV0=***");
  });
});

describe("accountOf", () => {
  it("names the account and blob endpoint, without any SAS", () => {
    expect(
      accountOf(
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9v;EndpointSuffix=core.windows.net",
      ),
    ).toEqual({
      account: "acct",
      blobEndpoint: "https://acct.blob.core.windows.net",
    });
    expect(
      accountOf(
        "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=abc",
      ),
    ).toEqual({
      account: "acct",
      blobEndpoint: "https://acct.blob.core.windows.net",
    });
    expect(accountOf("UseDevelopmentStorage=true")).toEqual({
      account: "devstoreaccount1",
      blobEndpoint: "http://127.0.0.1:10000/devstoreaccount1",
    });
  });

  it("refuses a string that names no account, without quoting it", () => {
    for (const bad of ["nonsense", "AccountName=acct;AccountKey=c2VjcmV0"]) {
      expect(() => accountOf(bad)).toThrow(SyntaxError);
      try {
        accountOf(bad);
      } catch (err) {
        expect((err as Error).message).not.toContain("c2VjcmV0");
      }
    }
  });
});

describe("connectionFields and allowsPlainHttp", () => {
  it("reads fields case-insensitively, values with '=' whole", () => {
    const fields = connectionFields("AccountName=acct; accountKey=c2VjcmV0PT0=;;junk");
    expect(Object.fromEntries(fields)).toEqual({ accountname: "acct", accountkey: "c2VjcmV0PT0=" });
  });

  it("allows plain HTTP only where the string names it", () => {
    expect(allowsPlainHttp("DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k")).toBe(true);
    expect(allowsPlainHttp("AccountName=a;AccountKey=k;TableEndpoint=http://127.0.0.1:10002/a")).toBe(true);
    expect(allowsPlainHttp("UseDevelopmentStorage=true")).toBe(true);
    expect(allowsPlainHttp("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k")).toBe(false);
    expect(allowsPlainHttp("AccountName=a;AccountKey=k;BlobEndpoint=http://127.0.0.1:10000/a")).toBe(false);
  });
});
