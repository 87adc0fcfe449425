/**
 * What a restarted agent takes over from one that died writing: its
 * abandoned Put Pages may land until the doubt window, counted from when
 * the new process began (the old one died before that), has passed.
 */
import { describe, expect, it } from "vitest";
import { doubtKey, inheritedDoubtMs, InDoubtWrites } from "../../agent/pageblob/in-doubt.ts";
import { DEFAULT_DOUBT_MS } from "../../agent/pageblob/transport.ts";

describe("doubts inherited from an earlier process", () => {
  it("last the window from this process's start, and nothing once it has passed", () => {
    expect(DEFAULT_DOUBT_MS).toBe(22_200);
    expect(inheritedDoubtMs(DEFAULT_DOUBT_MS, 1_500)).toBe(20_700);
    expect(inheritedDoubtMs(DEFAULT_DOUBT_MS, 22_200)).toBe(0);
    expect(inheritedDoubtMs(DEFAULT_DOUBT_MS, 60_000)).toBe(0);
  });

  it("hold back page writes anywhere on the blob, not its metadata or lease", () => {
    let now = 1_000;
    const doubts = new InDoubtWrites(() => now);
    const key = doubtKey({ origin: "https://acct.blob.core.windows.net", path: "/c/v/r" });
    expect(key).toBe("https://acct.blob.core.windows.net/c/v/r");
    doubts.abandon(key, { kind: "pages", start: 0, end: 1 << 20 }, inheritedDoubtMs(DEFAULT_DOUBT_MS, 1_000));
    expect(doubts.settledAt(key, { kind: "pages", start: 4096, end: 8192 })).toBe(1_000 + 21_200);
    expect(doubts.settledAt(key, { kind: "metadata" })).toBeUndefined();
    expect(doubts.settledAt(key, { kind: "lease" })).toBeUndefined();
    now += 21_200;
    expect(doubts.settledAt(key, { kind: "pages", start: 4096, end: 8192 })).toBeUndefined();
  });
});
