/**
 * The lease-break and kill -9 loops (write-loops.ts) at the size of
 * `npm test`: `pagedisk serve` on Azurite, fenced or killed while writes
 * are in flight, and not one acknowledged write lost nor one write landing
 * after the fence. `npm run soak` runs them with PAGEDISK_SOAK_LEASE_BREAKS
 * and PAGEDISK_SOAK_KILLS much larger; PAGEDISK_FUZZ_SEED replays a run.
 */
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fuzzSeed, sizeFromEnv, summaryLine } from "../fuzz/random.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { ensureBundleBuilt } from "../infra/installer.ts";
import { killLoop, leaseBreakLoop } from "./write-loops.ts";

const BREAKS = sizeFromEnv("PAGEDISK_SOAK_LEASE_BREAKS", 2);
const KILLS = sizeFromEnv("PAGEDISK_SOAK_KILLS", 2);

let azurite: Azurite;
let container: ContainerClient;

beforeAll(async () => {
  await ensureBundleBuilt();
  azurite = await startAzurite();
  container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("loops");
  await container.create();
});
afterAll(() => azurite?.dispose());

describe("writes under fencing and crashes", () => {
  it(`${BREAKS} lease breaks during writes: no acknowledged write lost, none lands after the break`, async () => {
    const seed = fuzzSeed();
    const report = await leaseBreakLoop({ azurite, container, seed, breaks: BREAKS });
    console.log(`${summaryLine("lease breaks", seed, report.counts)}; refused ${report.refused}, unanswered ${report.unanswered}`);
    expect(report.problems).toEqual([]);
    expect(report.counts).toMatchObject({ tried: BREAKS, lost: 0, stray: 0 });
    // Each round was fenced mid-stream: writes were acknowledged before, refused after.
    expect(report.counts.acknowledged).toBeGreaterThanOrEqual(50 * BREAKS);
    expect(report.refused).toBeGreaterThanOrEqual(BREAKS);
  }, Math.max(120_000, BREAKS * 30_000));

  it(`${KILLS} kill -9s of serve during writes: no acknowledged write lost`, async () => {
    const seed = fuzzSeed();
    const report = await killLoop({ azurite, container, seed, kills: KILLS });
    console.log(`${summaryLine("kill -9", seed, report.counts)}; unanswered ${report.unanswered}`);
    expect(report.problems).toEqual([]);
    expect(report.counts).toMatchObject({ tried: KILLS, lost: 0 });
    expect(report.counts.acknowledged).toBeGreaterThanOrEqual(50 * KILLS);
  }, Math.max(120_000, KILLS * 30_000));
});
