/**
 * `npm run bench`: measures pagedisk against its comparison peers in one run
 * and prints a table. Nothing here asserts; targets are shown beside ratios.
 *
 * (a) `pagedisk serve memory:` vs (b) `nbdkit memory`, same fio nbd jobs.
 * (c) `pagedisk serve` on Azurite vs the raw ceiling: Put Page / Get Blob
 *     straight to the same Azurite with our undici client at the same
 *     concurrency.
 *
 * (d) The control plane on Azurite (bench/control-plane.ts): the API's
 *     attach latency and what an attach and its detach cost in Table
 *     transactions.
 * (e) Real agent processes (bench/agent.ts): start time, memory, attach
 *     latency to NBD answering, failover time, bundle size.
 * (f) Replicas (bench/replicas.ts): write throughput with 2 replicas against
 *     1, bytes resynced after an outage against bytes written during it,
 *     rebuild MiB/s.
 * (g) Serverless (bench/serverless.ts): Functions requests and seconds and
 *     Table transactions per idle node-minute, the sweeper's pass at 3 to
 *     10,000 nodes, and the monthly bill they make, printed after the table.
 * (h) NBD flood (bench/nbd-flood.ts): `pagedisk serve`'s RSS while 20 and
 *     40 clients queue 32 MiB reads and never read the replies, after they
 *     leave, and a well-behaved client's operations meanwhile.
 *
 * Sections (a) and (c) run each workload ROUNDS times, ours and the peer
 * alternately, and report the median of each: the peer alone moves by a
 * third between runs on a shared 2-core machine, so one pair says little.
 *
 * Env: PAGEDISK_BENCH_SECONDS (default 5) per timed job;
 * PAGEDISK_BENCH_ROUNDS (default 3) for (a) and (c);
 * PAGEDISK_BENCH_ONLY=agent,control-plane runs only the sections named
 * (memory, azurite, control-plane, agent, replicas, serverless, nbd-flood;
 * default all).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { openPageBlob } from "../agent/pageblob/connect.ts";
import type { PageBlob } from "../agent/pageblob/page-blob.ts";
import { startAzurite } from "../test/harness/azurite.ts";
import { type ServeProcess, startServe } from "../test/harness/serve.ts";
import { agentSection } from "./agent.ts";
import { replicasSection } from "./replicas.ts";
import { controlPlaneSection } from "./control-plane.ts";
import { nbdFloodSection } from "./nbd-flood.ts";
import { serverlessSection } from "./serverless.ts";
import { closedLoop } from "./closed-loop.ts";
import { type FioJob, type FioResult, runFio } from "./fio.ts";
import { percentile, type TextRow } from "./rows.ts";

const SECONDS = Number(process.env.PAGEDISK_BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.PAGEDISK_BENCH_ROUNDS ?? 3);
const MiB = 1024 * 1024;
const SECTIONS = ["memory", "azurite", "control-plane", "agent", "replicas", "serverless", "nbd-flood"];
const only = (process.env.PAGEDISK_BENCH_ONLY ?? "").split(",").map((s) => s.trim()).filter(Boolean);
for (const name of only) {
  if (!SECTIONS.includes(name)) {
    console.error(`pagedisk bench: PAGEDISK_BENCH_ONLY: no section "${name}" (sections: ${SECTIONS.join(", ")})`);
    process.exit(2);
  }
}
const runs = (section: string) => only.length === 0 || only.includes(section);

interface Row {
  section: string;
  workload: string;
  ours: string;
  peer: string;
  ratio: number;
  target: number;
}
const rows: Array<Row | TextRow> = [];

const fmtIops = (iops: number) => `${Math.round(iops).toLocaleString("en-US")} IOPS`;
const fmtBw = (bytesPerSec: number) => `${(bytesPerSec / MiB).toFixed(1)} MiB/s`;

function memoryJobs(size: string): Array<FioJob & { target: number; metric: "iops" | "bw" }> {
  return [
    { name: "randread-4k-qd32", rw: "randread", bs: "4k", iodepth: 32, size, runtime: SECONDS, target: 0.7, metric: "iops" },
    { name: "randwrite-4k-qd32", rw: "randwrite", bs: "4k", iodepth: 32, size, runtime: SECONDS, target: 0.7, metric: "iops" },
    { name: "read-1m-qd8", rw: "read", bs: "1M", iodepth: 8, size, runtime: SECONDS, target: 1.0, metric: "bw" },
    { name: "write-1m-qd8", rw: "write", bs: "1M", iodepth: 8, size, runtime: SECONDS, target: 1.0, metric: "bw" },
  ];
}

async function startNbdkit(dir: string): Promise<{ proc: ChildProcess; uri: string }> {
  const socket = join(dir, "nbdkit.sock");
  const pidfile = join(dir, "nbdkit.pid");
  const proc = spawn("nbdkit", ["-f", "-U", socket, "-P", pidfile, "memory", "1G"], { stdio: "inherit" });
  await new Promise<void>((res, rej) => {
    proc.once("error", (e) => rej(new Error(`nbdkit: ${e.message} (apt-get install nbdkit)`)));
    const poll = (n: number): void => {
      if (existsSync(pidfile)) return res();
      if (n === 0) return rej(new Error("nbdkit did not start"));
      setTimeout(() => poll(n - 1), 50);
    };
    poll(200);
  });
  return { proc, uri: `nbd+unix:///?socket=${socket}` };
}

/** Fill the device so reads hit data, not holes (both sides alike). */
async function prefill(uri: string, size: string): Promise<void> {
  await runFio(uri, { name: "prefill", rw: "write", bs: "1M", iodepth: 8, size });
}

async function memorySection(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-bench-"));
  const ours = await startServe("memory:1GiB");
  const peer = await startNbdkit(dir);
  try {
    await prefill(ours.uri, "1G");
    await prefill(peer.uri, "1G");
    for (const job of memoryJobs("1G")) {
      const pick = (r: FioResult) => (job.metric === "iops" ? r.iops : r.bw);
      const [a, b] = await medians(
        async () => pick(await runFio(ours.uri, job)),
        async () => pick(await runFio(peer.uri, job)),
      );
      const fmt = (v: number) => (job.metric === "iops" ? fmtIops(v) : fmtBw(v));
      rows.push({ section: "memory: pagedisk / nbdkit", workload: job.name, ours: fmt(a), peer: fmt(b), ratio: a / b, target: job.target });
    }
  } finally {
    await ours.stop();
    peer.proc.kill("SIGTERM");
    await rm(dir, { recursive: true, force: true });
  }
}

/** Medians of ROUNDS alternating runs of ours and the peer. */
async function medians(ours: () => Promise<number>, peer: () => Promise<number>): Promise<[number, number]> {
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    a.push(await ours());
    b.push(await peer());
  }
  return [percentile(a, 50), percentile(b, 50)];
}

async function rawRate(blob: PageBlob, kind: "write" | "read", bs: number, depth: number, size: number): Promise<number> {
  const data = randomBytes(bs);
  const slots = Math.floor(size / bs);
  const t0 = performance.now();
  const ops = await closedLoop(depth, SECONDS, (n) => {
    const offset = (n % slots) * bs;
    return kind === "write" ? blob.putPages(offset, data) : blob.read(offset, bs);
  });
  return ops / ((performance.now() - t0) / 1000);
}

async function azuriteSection(): Promise<void> {
  const azurite = await startAzurite({ inMemory: true });
  const size = 256 * MiB;
  let serve: ServeProcess | undefined;
  try {
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("bench");
    await container.create();
    const env = { PAGEDISK_STORAGE_CONNECTION_STRING: azurite.connectionString };
    serve = await startServe(`${azurite.blobEndpoint}/bench/vol.vhd`, ["--create", "--size", "256MiB", "--lease", "none"], env);
    const rawBlob = openPageBlob(`${azurite.blobEndpoint}/bench/raw.vhd`, { connectionString: azurite.connectionString });
    await rawBlob.create(size);
    await prefill(serve.uri, "256M");
    // Fill the raw blob too, one pass of 4 MiB Put Pages, 8 at a time.
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next * 4 * MiB < size) await rawBlob.putPages(next++ * 4 * MiB, randomBytes(4 * MiB));
      }),
    );

    const fio = (job: Omit<FioJob, "size" | "runtime">) => async () =>
      runFio(serve!.uri, { ...job, size: "256M", runtime: SECONDS });
    const [seqW, rawW] = await medians(
      async () => (await fio({ name: "az-write-1m-qd8", rw: "write", bs: "1M", iodepth: 8 })()).bw,
      async () => (await rawRate(rawBlob, "write", MiB, 8, size)) * MiB,
    );
    rows.push({ section: "Azurite: pagedisk / raw REST", workload: "write-1m-qd8", ours: fmtBw(seqW), peer: fmtBw(rawW), ratio: seqW / rawW, target: 0.9 });

    const [seqR, rawR] = await medians(
      async () => (await fio({ name: "az-read-1m-qd8", rw: "read", bs: "1M", iodepth: 8 })()).bw,
      async () => (await rawRate(rawBlob, "read", MiB, 8, size)) * MiB,
    );
    rows.push({ section: "Azurite: pagedisk / raw REST", workload: "read-1m-qd8", ours: fmtBw(seqR), peer: fmtBw(rawR), ratio: seqR / rawR, target: 0.9 });

    const [small, rawSmall] = await medians(
      async () => (await fio({ name: "az-write-4k-qd32", rw: "write", bs: "4k", iodepth: 32 })()).iops,
      () => rawRate(rawBlob, "write", 4096, 32, size),
    );
    rows.push({
      section: "Azurite: pagedisk / raw REST",
      workload: "seq write-4k-qd32 (merging)",
      ours: fmtIops(small),
      peer: fmtIops(rawSmall),
      ratio: small / rawSmall,
      target: 10,
    });
    await rawBlob.close();
  } finally {
    await serve?.stop();
    await azurite.dispose();
  }
}

function printTable(): void {
  const header = ["section", "workload", "pagedisk", "peer", "ratio", "target", ""];
  const lines = rows.map((r) =>
    "verdict" in r
      ? [r.section, r.workload, r.ours, r.peer, r.ratio, r.target, r.verdict]
      : [
          r.section,
          r.workload,
          r.ours,
          r.peer,
          r.ratio.toFixed(2),
          `>= ${r.target}`,
          r.ratio >= r.target ? "met" : "MISSED",
        ],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log(fmt(header));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const l of lines) console.log(fmt(l));
}

console.error(`pagedisk bench: ${SECONDS} s per timed job, fio nbd engine`);
if (runs("memory")) await memorySection();
if (runs("azurite")) await azuriteSection();
if (runs("control-plane")) rows.push(...(await controlPlaneSection()));
if (runs("agent")) rows.push(...(await agentSection()));
if (runs("replicas")) rows.push(...(await replicasSection({ seconds: SECONDS, rounds: ROUNDS })));
if (runs("nbd-flood")) rows.push(...(await nbdFloodSection()));
const serverless = runs("serverless") ? await serverlessSection() : undefined;
if (serverless) rows.push(...serverless.rows);
printTable();
if (serverless) {
  console.log("\nThe control plane's bill per month (bench/cost-model.ts, prices in bench/prices.json):\n");
  console.log(serverless.costs);
}
