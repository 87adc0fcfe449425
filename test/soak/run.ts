/**
 * `npm run soak`: the suites `npm test` runs small (test/fuzz/*.test.ts,
 * test/soak/write-loops.test.ts), at a nightly size, and a table of their
 * counts. Exits 1 when any count that must be zero is not.
 *
 * Sizes (env, defaults in brackets): PAGEDISK_FUZZ_NBD_SESSIONS [20000],
 * PAGEDISK_FUZZ_API_REQUESTS [3000], PAGEDISK_SOAK_LEASE_BREAKS [20],
 * PAGEDISK_SOAK_KILLS [10]. PAGEDISK_FUZZ_SEED replays a run (each suite
 * prints the seed it used); PAGEDISK_SOAK_ONLY=nbd,api,lease,kill runs only
 * the suites named.
 *
 * Needs the agent bundle (dist/pagedisk.mjs) for the lease and kill loops:
 * the npm script builds it first.
 */
import { BlobServiceClient } from "@azure/storage-blob";
import { startControlPlane } from "../functions/fixture.ts";
import { fuzzApi, prepareApiFuzz } from "../fuzz/api-fuzzer.ts";
import { fuzzNbd } from "../fuzz/nbd-fuzzer.ts";
import { fuzzSeed, sizeFromEnv, summaryLine } from "../fuzz/random.ts";
import { startAzurite } from "../harness/azurite.ts";
import { killLoop, leaseBreakLoop } from "./write-loops.ts";

const SUITES = ["nbd", "api", "lease", "kill"] as const;
type Suite = (typeof SUITES)[number];

/** One row of the table: the suite's counts, and which of them must be zero. */
interface Row {
  suite: string;
  seed: number;
  counts: Record<string, number>;
  mustBeZero: string[];
  problems: string[];
}

const only = (process.env.PAGEDISK_SOAK_ONLY ?? "").split(",").map((s) => s.trim()).filter(Boolean);
for (const name of only) {
  if (!SUITES.includes(name as Suite)) {
    console.error(`pagedisk soak: PAGEDISK_SOAK_ONLY: no suite "${name}" (suites: ${SUITES.join(", ")})`);
    process.exit(2);
  }
}
const runs = (suite: Suite) => only.length === 0 || only.includes(suite);
const log = (line: string) => console.log(line);
const rows: Row[] = [];

if (runs("nbd")) {
  const sessions = sizeFromEnv("PAGEDISK_FUZZ_NBD_SESSIONS", 20_000);
  const seed = fuzzSeed();
  log(`nbd fuzz: ${sessions} sessions, seed ${seed}`);
  const report = await fuzzNbd({ sessions, seed, progress: log });
  log(summaryLine("nbd fuzz", seed, report.counts));
  log(`  sessions by kind: ${JSON.stringify(report.kinds)}`);
  rows.push({ suite: "NBD fuzz", seed, counts: { ...report.counts }, mustBeZero: ["failed", "crashed", "hung", "lost"], problems: report.problems });
}

if (runs("api")) {
  const requests = sizeFromEnv("PAGEDISK_FUZZ_API_REQUESTS", 3_000);
  const seed = fuzzSeed();
  log(`api fuzz: ${requests} requests, seed ${seed}`);
  const fixture = await startControlPlane();
  try {
    const target = await prepareApiFuzz(fixture);
    const report = await fuzzApi({ requests, seed, target, progress: log });
    log(`${summaryLine("api fuzz", seed, report.counts)}; accepted ${report.accepted}`);
    for (const a of report.acceptedSamples) log(`  accepted: ${a}`);
    log(`  operations: ${Object.keys(report.operations).length}, each tried at least ${Math.min(...Object.values(report.operations))} times`);
    rows.push({
      suite: "API fuzz",
      seed,
      counts: { ...report.counts },
      mustBeZero: ["5xx", "bad error shape", "changed registry"],
      problems: report.problems,
    });
  } finally {
    await fixture.dispose();
  }
}

if (runs("lease") || runs("kill")) {
  const azurite = await startAzurite();
  try {
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("soak");
    await container.create();
    if (runs("lease")) {
      const breaks = sizeFromEnv("PAGEDISK_SOAK_LEASE_BREAKS", 20);
      const seed = fuzzSeed();
      log(`lease breaks: ${breaks}, seed ${seed}`);
      const report = await leaseBreakLoop({ azurite, container, seed, breaks, progress: log });
      log(`${summaryLine("lease breaks", seed, report.counts)}; refused ${report.refused}, unanswered ${report.unanswered}`);
      rows.push({ suite: "lease breaks", seed, counts: { ...report.counts }, mustBeZero: ["lost", "stray"], problems: report.problems });
    }
    if (runs("kill")) {
      const kills = sizeFromEnv("PAGEDISK_SOAK_KILLS", 10);
      const seed = fuzzSeed();
      log(`kill -9: ${kills}, seed ${seed}`);
      const report = await killLoop({ azurite, container, seed, kills, progress: log });
      log(`${summaryLine("kill -9", seed, report.counts)}; unanswered ${report.unanswered}`);
      rows.push({ suite: "kill -9", seed, counts: { ...report.counts }, mustBeZero: ["lost"], problems: report.problems });
    }
  } finally {
    await azurite.dispose();
  }
}

// The table: one row per suite, one column per count any suite has.
const columns = [...new Set(rows.flatMap((r) => Object.keys(r.counts)))];
const header = ["suite", "seed", ...columns];
const lines = [header, ...rows.map((r) => [r.suite, String(r.seed), ...columns.map((c) => (c in r.counts ? String(r.counts[c]) : "-"))])];
console.log("");
console.log(`| ${header.join(" | ")} |`);
console.log(`|${header.map(() => "---").join("|")}|`);
for (const line of lines.slice(1)) console.log(`| ${line.join(" | ")} |`);

let failed = false;
for (const r of rows) {
  const bad = r.mustBeZero.filter((c) => (r.counts[c] ?? 0) !== 0);
  if (bad.length === 0 && r.problems.length === 0) continue;
  failed = true;
  console.log(`\n${r.suite} (seed ${r.seed}): ${bad.map((c) => `${c} ${r.counts[c]}`).join(", ") || "problems"}`);
  for (const p of r.problems) console.log(`  ${p}`);
}
process.exit(failed ? 1 : 0);
