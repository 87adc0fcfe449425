/**
 * Server timeouts and abandoned attempts at the page blob boundary: every
 * request the agent sends carries `timeout=`, the fault proxy keeps Azure's
 * rule for it, and a write whose attempt was left in doubt holds back only
 * what could be overtaken by it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PageBlobBackend } from "../../agent/engine/pageblob-backend.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import { leavesInDoubt } from "../../agent/pageblob/classify.ts";
import { systemClock } from "../../agent/pageblob/clock.ts";
import { StorageError } from "../../agent/pageblob/errors.ts";
import { InDoubtWrites, overlaps, type Touches } from "../../agent/pageblob/in-doubt.ts";
import { DEFAULT_SERVER_TIMEOUT_SEC } from "../../agent/pageblob/transport.ts";
import type { FaultProxy } from "../harness/fault-proxy.ts";
import { pattern, type ProxiedFixture, setupProxiedFixture } from "./fixture.ts";

const KiB = 1024;

let fx: ProxiedFixture;
let proxy: FaultProxy;
beforeAll(async () => {
  fx = await setupProxiedFixture();
  ({ proxy } = fx);
});
afterAll(() => fx?.close());
afterEach(async () => {
  await proxy.release();
  proxy.clear();
  proxy.resetCounts();
});

async function newBlob(size = 1024 * KiB): Promise<string> {
  const name = fx.name();
  await fx.open(name).create(size);
  return name;
}

describe("the server timeout on every request", () => {
  it("is sent with every call of the client and of the engine over it", async () => {
    const timeouts = new Set<string | null>();
    const off = proxy.onRequest((r) => timeouts.add(r.url.searchParams.get("timeout")));
    const name = fx.name();
    const pb = fx.open(name, { endpoint: proxy.blobEndpoint });
    await pb.create(1024 * KiB);
    await pb.properties();
    await pb.setMetadata({ owner: "test" });
    await pb.resize(2048 * KiB);
    await pb.putPages(0, pattern(8 * KiB, 1));
    await pb.clearPages(0, 4 * KiB);
    await pb.read(0, 8 * KiB);
    await pb.pageRanges(0, 2048 * KiB);
    const id = await pb.acquireLease(-1);
    const changed = await pb.changeLease(id, "6f1c1a0e-8c1e-4b7e-9a39-3f2b9b0f5a10");
    await pb.renewLease(changed);
    await pb.releaseLease(changed);
    await pb.acquireLease(-1);
    await pb.breakLease(0);

    const vol = await openVolume(await PageBlobBackend.open(fx.open(name, { endpoint: proxy.blobEndpoint })));
    await vol.write(64 * KiB, pattern(128 * KiB, 2));
    await vol.read(64 * KiB, 128 * KiB);
    await vol.trim(64 * KiB, 64 * KiB);
    await vol.writeZeroes(0, 4 * KiB, { noHole: true });
    await vol.blockStatus(0, 2048 * KiB);
    await vol.flush();
    await vol.close();
    off();

    expect(proxy.received()).toBeGreaterThanOrEqual(20);
    expect(proxy.untimed()).toBe(0);
    expect([...timeouts]).toEqual([String(DEFAULT_SERVER_TIMEOUT_SEC)]);
  });

  it("must be a whole number of seconds, shorter than the client's own timeout: else nothing is opened", () => {
    const name = fx.name();
    expect(() => fx.open(name, { timeoutMs: 20_000 })).toThrow(
      /client timeout 20000 ms must be longer than the server timeout of 20 s/,
    );
    expect(() => fx.open(name, { serverTimeoutSec: 0 })).toThrow(/at least 1/);
    expect(() => fx.open(name, { serverTimeoutSec: 1.5 })).toThrow(/whole number of seconds/);
    expect(() => fx.open(name, { inDoubtMarginMs: -1 })).toThrow(/margin/);
  });
});

describe("the fault proxy keeps Azure's server timeout", () => {
  /** A raw Put Page of 512 bytes through the proxy, with the given query added. */
  function putPage(name: string, extra: string, seed: number): Promise<Response> {
    return fetch(`${proxy.via(fx.sasUrl(name))}&comp=page${extra}`, {
      method: "PUT",
      headers: {
        "x-ms-version": "2025-11-05",
        "x-ms-page-write": "update",
        "x-ms-range": "bytes=0-511",
      },
      body: pattern(512, seed),
    });
  }

  async function stored(name: string): Promise<Buffer> {
    return fx.container.getPageBlobClient(name).downloadToBuffer(0, 512);
  }

  it("answers 500 OperationTimedOut, and never forwards, a request whose timeout passed before it was forwarded", async () => {
    const name = await newBlob();
    proxy.inject({ fault: { type: "delay", ms: 1100 }, only: ["putPage"] });
    const late = await putPage(name, "&timeout=1", 3);
    expect(late.status).toBe(500);
    expect(late.headers.get("x-ms-error-code")).toBe("OperationTimedOut");
    expect(await late.text()).toMatch(/<Code>OperationTimedOut<\/Code>/);
    expect([proxy.faulted("putPage"), proxy.forwarded("putPage")]).toEqual([1, 0]);
    expect((await stored(name)).every((b) => b === 0)).toBe(true);

    // In time (or with no timeout at all, as Azurite lacks one), the same delay is forwarded.
    expect((await putPage(name, "&timeout=5", 4)).status).toBe(201);
    expect((await stored(name)).equals(pattern(512, 4))).toBe(true);
    expect((await putPage(name, "", 5)).status).toBe(201);
    expect((await stored(name)).equals(pattern(512, 5))).toBe(true);
    expect(proxy.untimed("putPage")).toBe(1);
  });

  it("holds a request's body, then lets it through (or times it out) even after its client has gone", async () => {
    const name = await newBlob();
    proxy.inject({ fault: { type: "hold", cut: true }, only: ["putPage"], times: 1 });
    await expect(putPage(name, "&timeout=30", 6)).rejects.toThrow();
    expect(proxy.holding()).toBe(1);
    expect((await stored(name)).every((b) => b === 0)).toBe(true);
    await proxy.release();
    expect(proxy.holding()).toBe(0);
    expect((await stored(name)).equals(pattern(512, 6))).toBe(true);
  });
});

describe("an attempt left in doubt", () => {
  it("holds back later writes that overlap it, and only those, until it can no longer land", async () => {
    const name = await newBlob();
    const pb = fx.open(name, {
      endpoint: proxy.blobEndpoint,
      clock: systemClock,
      timeoutMs: 4000,
      serverTimeoutSec: 3,
      inDoubtMarginMs: 200,
    });
    proxy.inject({ fault: { type: "hold", cut: true }, only: ["putPage"], times: 1 });
    await expect(pb.putPages(0, pattern(8 * KiB, 7))).rejects.toMatchObject({
      code: "Transient",
      retryAfterMs: 3230,
    });
    const overlapping = pb.putPages(4 * KiB, pattern(8 * KiB, 8));
    // A write elsewhere goes at once (an Azurite Put Page takes milliseconds, the doubt seconds)...
    await pb.putPages(64 * KiB, pattern(8 * KiB, 9));
    expect(proxy.received("putPage")).toBe(2);
    // ...the overlapping one only once the held attempt can no longer land.
    await overlapping;
    expect(proxy.received("putPage")).toBe(3);
    await proxy.release();
    expect(proxy.faulted("putPage")).toBe(1);
    const got = await fx.container.getPageBlobClient(name).downloadToBuffer(0, 12 * KiB);
    expect(got.subarray(0, 4 * KiB).every((b) => b === 0)).toBe(true);
    expect(got.subarray(4 * KiB).equals(pattern(8 * KiB, 8))).toBe(true);
  });

  it("is what a failure without a verdict leaves; an answer that says what happened is not", () => {
    const net = (code: string) =>
      new StorageError("Transient", code, { status: 0, cause: Object.assign(new Error(code), { code }) });
    const http = (status: number, azureCode?: string) =>
      new StorageError(status >= 500 ? "Transient" : "Invalid", "x", { status, azureCode });
    expect(leavesInDoubt(net("ECONNRESET"))).toBe(true);
    expect(leavesInDoubt(net("UND_ERR_SOCKET"))).toBe(true);
    expect(leavesInDoubt(net("UND_ERR_HEADERS_TIMEOUT"))).toBe(true);
    expect(leavesInDoubt(http(500, "InternalError"))).toBe(true);
    expect(leavesInDoubt(http(503, "ServiceUnavailable"))).toBe(true);
    // Never connected, refused before any work, timed out by the service, or rejected.
    expect(leavesInDoubt(net("ECONNREFUSED"))).toBe(false);
    expect(leavesInDoubt(net("UND_ERR_CONNECT_TIMEOUT"))).toBe(false);
    expect(leavesInDoubt(http(503, "ServerBusy"))).toBe(false);
    expect(leavesInDoubt(http(500, "OperationTimedOut"))).toBe(false);
    expect(leavesInDoubt(http(412, "LeaseIdMismatchWithBlobOperation"))).toBe(false);
    expect(leavesInDoubt(http(408))).toBe(false);
  });

  it("is kept per blob and per thing changed, and forgotten once it can no longer land", () => {
    let now = 1000;
    const doubts = new InDoubtWrites(() => now);
    const pages = (start: number, end: number): Touches => ({ kind: "pages", start, end });
    doubts.abandon("a", pages(0, 4096), 500);
    doubts.abandon("a", { kind: "metadata" }, 800);
    expect(doubts.settledAt("a", pages(4095, 8192))).toBe(1500);
    expect(doubts.settledAt("a", pages(4096, 8192))).toBeUndefined();
    expect(doubts.settledAt("b", pages(0, 4096))).toBeUndefined();
    expect(doubts.settledAt("a", { kind: "lease" })).toBeUndefined();
    expect(doubts.settledAt("a", { kind: "blob" })).toBe(1800);
    now = 1500;
    expect(doubts.settledAt("a", pages(0, 4096))).toBeUndefined();
    expect(doubts.count("a")).toBe(1);
    now = 1800;
    expect(doubts.count("a")).toBe(0);

    expect(overlaps(pages(0, Number.POSITIVE_INFINITY), pages(1 << 40, (1 << 40) + 512))).toBe(true);
    expect(overlaps({ kind: "blob" }, { kind: "lease" })).toBe(true);
    expect(overlaps({ kind: "lease" }, { kind: "metadata" })).toBe(false);
    expect(overlaps({ kind: "lease" }, pages(0, 512))).toBe(false);
  });
});
