/**
 * The NBD fuzzer (nbd-fuzzer.ts) at the size of `npm test`: hostile and
 * broken sessions against a real NbdServer while a well-behaved client is
 * served on another connection. `npm run soak` runs the same with
 * PAGEDISK_FUZZ_NBD_SESSIONS in the tens of thousands; PAGEDISK_FUZZ_SEED
 * replays a run.
 */
import { describe, expect, it } from "vitest";
import type { BlockDevice } from "../../agent/nbd/device.ts";
import { fuzzNbd } from "./nbd-fuzzer.ts";
import { fuzzSeed, sizeFromEnv, summaryLine } from "./random.ts";

const SESSIONS = sizeFromEnv("PAGEDISK_FUZZ_NBD_SESSIONS", 300);

describe("NBD fuzz", () => {
  it(`${SESSIONS} hostile sessions: nothing crashes or hangs, the other client is served, no data changes`, async () => {
    const seed = fuzzSeed();
    const report = await fuzzNbd({ sessions: SESSIONS, seed });
    console.log(summaryLine("nbd fuzz", seed, report.counts));
    expect(report.problems).toEqual([]);
    expect(report.counts).toEqual({ tried: SESSIONS, failed: 0, crashed: 0, hung: 0, lost: 0 });
    // Every kind of session ran (the first sessions take each kind in turn).
    expect(Object.entries(report.kinds).filter(([, n]) => n === 0)).toEqual([]);
  }, Math.max(240_000, SESSIONS * 50));

  it("counts a server that stops serving the well-behaved client", async () => {
    // Once the fuzz starts, the well-behaved client's device answers nothing more:
    // what a server starved by its hostile clients looks like from that client.
    let calls = 0;
    const stalled = (device: BlockDevice): BlockDevice =>
      new Proxy(device, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (typeof value !== "function") return value;
          return (...args: unknown[]) => {
            // The 4 writes of the protected half go through; nothing after them.
            if (prop !== "close" && ++calls > 4) return new Promise(() => {});
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
    const report = await fuzzNbd({ sessions: 4, seed: 1, concurrency: 2, watchdogMs: 300, wrapKeeper: stalled });
    expect(report.counts.failed).toBeGreaterThan(0);
    expect(report.problems.join("\n")).toMatch(/unanswered after 300 ms/);
  });
});
