/**
 * Run one fio job with the nbd engine against an NBD URI and read its JSON.
 */
import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);

export interface FioJob {
  name: string;
  rw: "read" | "write" | "randread" | "randwrite";
  bs: string;
  iodepth: number;
  /** Seconds; omitted = one pass over `size`. */
  runtime?: number;
  size: string;
}

export interface FioResult {
  iops: number;
  /** bytes per second */
  bw: number;
  /** completion latency percentiles in microseconds */
  p50us: number;
  p99us: number;
}

export async function runFio(uri: string, job: FioJob): Promise<FioResult> {
  const out = join(tmpdir(), `pagedisk-fio-${process.pid}-${job.name}.json`);
  const args = [
    `--name=${job.name}`,
    "--ioengine=nbd",
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${job.size}`,
    "--output-format=json",
    `--output=${out}`,
  ];
  if (job.runtime) args.push("--time_based", `--runtime=${job.runtime}`, "--ramp_time=1");
  await exec("fio", args, { maxBuffer: 16 << 20 });
  const json = JSON.parse(await readFile(out, "utf8")) as {
    jobs: Array<Record<"read" | "write", { iops: number; bw_bytes: number; clat_ns: { percentile?: Record<string, number> } }>>;
  };
  await rm(out, { force: true });
  const dir = job.rw.includes("read") ? "read" : "write";
  const r = json.jobs[0]![dir];
  const pct = r.clat_ns.percentile ?? {};
  return {
    iops: r.iops,
    bw: r.bw_bytes,
    p50us: (pct["50.000000"] ?? 0) / 1000,
    p99us: (pct["99.000000"] ?? 0) / 1000,
  };
}
