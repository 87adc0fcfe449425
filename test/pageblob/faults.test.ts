import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { OpenOptions } from "../../agent/pageblob/connect.ts";
import type { PageBlob } from "../../agent/pageblob/page-blob.ts";
import { DEFAULT_RETRY } from "../../agent/pageblob/retry.ts";
import {
  CLOCK_RATE_TOLERANCE,
  DEFAULT_IN_DOUBT_MARGIN_MS,
  DEFAULT_SERVER_TIMEOUT_SEC,
} from "../../agent/pageblob/transport.ts";
import type { FaultProxy } from "../harness/fault-proxy.ts";
import { pattern, type ProxiedFixture, setupProxiedFixture } from "./fixture.ts";

/** How long an abandoned write may still land, with the default timeouts. */
const DOUBT_MS = Math.ceil(
  DEFAULT_SERVER_TIMEOUT_SEC * 1000 * (1 + CLOCK_RATE_TOLERANCE) + DEFAULT_IN_DOUBT_MARGIN_MS,
);

let fx: ProxiedFixture;
let proxy: FaultProxy;
beforeAll(async () => {
  fx = await setupProxiedFixture();
  ({ proxy } = fx);
});
afterAll(() => fx?.close());
afterEach(() => {
  proxy.clear();
  proxy.resetCounts();
});

/** A blob created directly on Azurite, and our client for it through the proxy. */
async function blobViaProxy(size = 65536, opts: OpenOptions = {}): Promise<PageBlob> {
  const name = fx.name();
  await fx.open(name).create(size);
  return fx.open(name, { endpoint: proxy.blobEndpoint, ...opts });
}

describe("error classification through the fault proxy", () => {
  it("503 ServerBusy is Throttled with its Retry-After, and is not retried at request level", async () => {
    const pb = await blobViaProxy();
    proxy.inject({ fault: { type: "busy", retryAfterSec: 3 }, only: ["putPage"] });
    const err = await pb.putPages(0, pattern(4096, 1)).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "Throttled",
      status: 503,
      azureCode: "ServerBusy",
      retryAfterMs: 3000,
    });
    expect(proxy.received("putPage")).toBe(1);
    // Only Put Page was throttled: reads pass, and nothing landed.
    expect(Buffer.from(await pb.read(0, 4096)).every((b) => b === 0)).toBe(true);
    proxy.clear();
    await pb.putPages(0, pattern(4096, 1));
    expect(Buffer.from(await pb.read(0, 4096)).equals(pattern(4096, 1))).toBe(true);
  });

  it("500 OperationTimedOut is Throttled; other 5xx are Transient and retried up to the limit", async () => {
    const pb = await blobViaProxy();
    proxy.inject({ fault: { type: "timeout" }, only: ["getBlob"], times: 1 });
    await expect(pb.read(0, 512)).rejects.toMatchObject({
      code: "Throttled",
      azureCode: "OperationTimedOut",
    });
    expect(proxy.received("getBlob")).toBe(1);

    proxy.inject({
      fault: { type: "status", status: 500, code: "InternalError" },
      only: ["getBlob"],
    });
    await expect(pb.read(0, 512)).rejects.toMatchObject({ code: "Transient", status: 500 });
    expect(proxy.received("getBlob")).toBe(1 + DEFAULT_RETRY.maxAttempts);

    proxy.inject({
      fault: { type: "status", status: 503, code: "ServiceUnavailable" },
      only: ["getBlob"],
    });
    await expect(pb.read(0, 512)).rejects.toMatchObject({ code: "Transient" });
  });

  it("connection resets are Transient and retried; a reset page write is not resent here", async () => {
    const pb = await blobViaProxy();
    await pb.putPages(8192, pattern(8192, 2));
    proxy.resetCounts();
    // A read that may have reached the service changes nothing: resent at once.
    proxy.inject({ fault: { type: "reset" }, only: ["getBlob"], times: 2 });
    expect(Buffer.from(await pb.read(8192, 8192)).equals(pattern(8192, 2))).toBe(true);
    expect([proxy.faulted("getBlob"), proxy.forwarded("getBlob")]).toEqual([2, 1]);

    // A page write may have: it fails at once, with a Retry-After covering how long it may still land.
    proxy.inject({ fault: { type: "reset" }, only: ["putPage"], times: 1 });
    const err = await pb.putPages(8192, pattern(8192, 3)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "Transient", status: 0, retryAfterMs: DOUBT_MS });
    expect([proxy.received("putPage"), proxy.forwarded("putPage")]).toEqual([1, 0]);

    // A lease call has no engine above it: it is resent here, once its doubt has passed.
    proxy.inject({ fault: { type: "reset" }, only: ["lease"], times: 1 });
    const id = await pb.acquireLease(-1);
    expect([proxy.faulted("lease"), proxy.forwarded("lease")]).toEqual([1, 1]);
    await pb.releaseLease(id);
  });

  it("persistent resets exhaust the retries and surface as Transient", async () => {
    const pb = await blobViaProxy();
    proxy.inject({ fault: { type: "reset" } });
    const err = await pb.read(0, 4096).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "Transient", status: 0, retriable: true });
    expect(proxy.received("getBlob")).toBe(DEFAULT_RETRY.maxAttempts);
    await expect(pb.putPages(0, pattern(4096, 3))).rejects.toMatchObject({ code: "Transient" });
    expect(proxy.received("putPage")).toBe(1);
    expect(proxy.forwarded()).toBe(0);
  });

  it("a request that gets no answer times out as Transient; held requests go through when released", async () => {
    const pb = await blobViaProxy(65536, {
      timeoutMs: 1500,
      serverTimeoutSec: 1,
      retry: { ...DEFAULT_RETRY, maxAttempts: 2 },
    });
    proxy.inject({ fault: { type: "hang" }, only: ["pageRanges"] });
    await expect(pb.pageRanges(0, 65536)).rejects.toMatchObject({ code: "Transient" });
    expect(proxy.received("pageRanges")).toBe(2);

    const slow = await blobViaProxy(65536);
    proxy.inject({ fault: { type: "hang" }, only: ["putPage"] });
    const held = slow.putPages(512, pattern(512, 5));
    await proxy.waitFor(() => proxy.received("putPage") >= 1);
    // While the write is held, other requests flow and do not see it.
    expect(Buffer.from(await slow.read(512, 512)).every((b) => b === 0)).toBe(true);
    proxy.clear();
    await held;
    expect(proxy.received("putPage")).toBe(1);
    expect(Buffer.from(await slow.read(512, 512)).equals(pattern(512, 5))).toBe(true);
  });

  it("delayed requests are forwarded late but whole", async () => {
    const pb = await blobViaProxy();
    proxy.inject({ fault: { type: "delay", ms: 100 }, only: ["putPage"], times: 1 });
    await pb.putPages(0, pattern(4096, 8));
    expect(proxy.forwarded("putPage")).toBe(1);
    expect(proxy.faulted("putPage")).toBe(0);
    expect(Buffer.from(await pb.read(0, 4096)).equals(pattern(4096, 8))).toBe(true);
  });

  it("follows NextMarker when Get Page Ranges paginates", async () => {
    const pb = await blobViaProxy(1 << 20);
    await pb.putPages(65536, pattern(4096, 7));
    const markers: Array<string | null> = [];
    const off = proxy.onRequest((r) => {
      if (r.kind === "pageRanges") markers.push(r.url.searchParams.get("marker"));
    });
    // Azurite never paginates: the first page is canned, the second comes from Azurite.
    proxy.inject({
      fault: {
        type: "reply",
        status: 200,
        headers: { "content-type": "application/xml" },
        body: '<?xml version="1.0" encoding="utf-8"?><PageList><PageRange><Start>0</Start><End>4095</End></PageRange><NextMarker>2!72!page/1&amp;x</NextMarker></PageList>',
      },
      only: ["pageRanges"],
      times: 1,
    });
    const ranges = await pb.pageRanges(0, 1 << 20);
    off();
    expect(markers).toEqual([null, "2!72!page/1&x"]);
    expect(ranges).toEqual([
      { offset: 0, length: 4096 },
      { offset: 65536, length: 4096 },
    ]);
  });

  it("counts requests by kind", async () => {
    const pb = await blobViaProxy();
    await pb.putPages(0, pattern(512, 6));
    await pb.putPages(512, pattern(512, 6));
    await pb.clearPages(0, 512);
    await pb.read(0, 1024);
    await pb.pageRanges(0, 65536);
    await pb.properties();
    const id = await pb.acquireLease(-1);
    await pb.releaseLease(id);
    expect({
      putPage: proxy.received("putPage"),
      clearPages: proxy.received("clearPages"),
      getBlob: proxy.received("getBlob"),
      pageRanges: proxy.received("pageRanges"),
      properties: proxy.received("properties"),
      lease: proxy.received("lease"),
      all: proxy.received(),
    }).toEqual({
      putPage: 2,
      clearPages: 1,
      getBlob: 1,
      pageRanges: 1,
      properties: 1,
      lease: 2,
      all: 8,
    });
  });
});
