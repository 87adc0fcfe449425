/**
 * NBD flood: what unread replies cost the serving process (issue 14, item 4).
 *
 * `pagedisk serve memory:1GiB` runs as a child process with every limit at
 * its default. For each round, FLOODERS clients connect, each queues
 * READS_PER_FLOODER reads of 32 MiB and never reads a reply, while one
 * well-behaved client alternates 64 KiB writes and read-backs (one at a
 * time, checking the data) on its own part of the export. Reported per round:
 *
 * - the serving process's peak RSS (VmHWM of a fresh process, so the peak of
 *   that round alone), target below 1 GiB;
 * - its RSS SOON_MS and SETTLE_MS after the flooders have closed, beside its
 *   RSS before the flood;
 * - the well-behaved client's completed operations during the flood, and
 *   whether it finished every operation it started.
 *
 * The flood is judged settled when the server's RSS has not grown for a
 * second: the server has stopped reading the flooders by then (or has run
 * out of flooders' requests to read). A bench may wait on time; a test may not.
 *
 * Run: `npx node bench/nbd-flood.ts` (from the working tree's sources), or
 * with PAGEDISK_BENCH_FLOOD_BIN=dist/pagedisk.mjs to measure the bundle.
 * Env: PAGEDISK_BENCH_FLOOD_CLIENTS (default "20,40"),
 * PAGEDISK_BENCH_FLOOD_SECONDS (default 5): how long the well-behaved client
 * runs while the flood holds.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { CMD, RawClient } from "../test/nbd/raw-client.ts";
import { sectionRows, type TextRow } from "./rows.ts";

const MiB = 1024 * 1024;
const ROUNDS = (process.env.PAGEDISK_BENCH_FLOOD_CLIENTS ?? "20,40")
  .split(",")
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isInteger(n) && n > 0);
const SECONDS = Number(process.env.PAGEDISK_BENCH_FLOOD_SECONDS ?? 5);
const BIN = resolve(import.meta.dirname, "..", process.env.PAGEDISK_BENCH_FLOOD_BIN ?? "agent/cli.ts");
const READ_BYTES = 32 * MiB;
const READS_PER_FLOODER = 8;
const GOOD_BYTES = 64 * 1024;
/** The well-behaved client's region: past every offset the flooders read. */
const GOOD_OFFSET = 512 * MiB;
const EXPORT_SIZE = "1GiB";
const RSS_TARGET = 1024 * MiB;
/** How long RSS must stay flat for the flood to count as settled. */
const FLAT_MS = 1000;
/** Give up waiting for a settled flood after this long (report what was reached). */
const SETTLE_LIMIT_MS = 30_000;
/** RSS is read this long after the flooders close... */
const SOON_MS = 2000;
/**
 * ... and again this long after: past two of the buffer pool's idle periods
 * (10 s each), so what is left then is what stays.
 */
const SETTLE_MS = 25_000;
const SECTION = "nbd flood (serve memory:, unread 32 MiB reads)";

const mib = (bytes: number) => `${(bytes / MiB).toFixed(0)} MiB`;
const { atMost, reported } = sectionRows(SECTION);

interface Served {
  proc: ChildProcess;
  host: string;
  port: number;
  exited: Promise<unknown>;
}

async function startServe(): Promise<Served> {
  const proc = spawn(
    process.execPath,
    [BIN, "serve", `memory:${EXPORT_SIZE}`, "--listen", "tcp:127.0.0.1:0"],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  const exited = new Promise((res) => proc.once("exit", res));
  const line = await new Promise<string>((res, rej) => {
    createInterface({ input: proc.stdout! }).once("line", res);
    void exited.then(() => rej(new Error("pagedisk serve exited before serving")));
  });
  const m = /nbd:\/\/([^:/]+):(\d+)\//.exec(line);
  if (!m) throw new Error(`no NBD URI in: ${line}`);
  return { proc, host: m[1]!, port: Number(m[2]), exited };
}

/** VmRSS and VmHWM (peak) of a process, in bytes. */
async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0);
  return { rss: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
}

/** Connect and queue the flood; the replies are never read. */
async function flooder(served: Served, index: number): Promise<RawClient> {
  const c = await RawClient.connect({ host: served.host, port: served.port });
  await c.handshake("");
  // Stop taking bytes from the kernel: the client never reads its replies.
  c.socket.pause();
  for (let i = 0; i < READS_PER_FLOODER; i++) {
    const offset = ((index * READS_PER_FLOODER + i) * READ_BYTES) % GOOD_OFFSET;
    c.send({ type: CMD.READ, handle: BigInt(i + 1), offset, length: READ_BYTES });
  }
  return c;
}

/** Alternate writes and read-backs until `stop` resolves; counts completed operations. */
async function wellBehaved(served: Served, stop: Promise<void>): Promise<{ ops: number; failed: string | undefined }> {
  const c = await RawClient.connect({ host: served.host, port: served.port });
  await c.handshake("");
  let stopped = false;
  void stop.then(() => {
    stopped = true;
  });
  let ops = 0;
  let failed: string | undefined;
  let handle = 1n;
  try {
    for (let i = 0; !stopped; i++) {
      // A few slots over and over: the data it leaves in the memory export stays small.
      const offset = GOOD_OFFSET + (i % 16) * GOOD_BYTES;
      const payload = Buffer.alloc(GOOD_BYTES, i & 0xff);
      const w = await c.request({ type: CMD.WRITE, handle: handle++, offset, payload });
      if (w.error !== 0) throw new Error(`write failed with ${w.error}`);
      ops++;
      const r = await c.request({ type: CMD.READ, handle: handle++, offset, length: GOOD_BYTES });
      if (r.error !== 0 || !r.data?.equals(payload)) throw new Error("read-back differs");
      ops++;
    }
  } catch (err) {
    failed = (err as Error).message;
  }
  c.close();
  return { ops, failed };
}

/** Wait until the server's RSS has been flat for FLAT_MS (or SETTLE_LIMIT_MS passed). */
async function settled(pid: number): Promise<void> {
  const start = Date.now();
  let last = (await memoryOf(pid)).rss;
  let flatSince = Date.now();
  while (Date.now() - start < SETTLE_LIMIT_MS) {
    await sleep(100);
    const { rss } = await memoryOf(pid);
    if (rss > last + 4 * MiB) {
      last = rss;
      flatSince = Date.now();
    } else if (Date.now() - flatSince >= FLAT_MS) {
      return;
    }
  }
}

async function round(clients: number): Promise<TextRow[]> {
  const served = await startServe();
  const pid = served.proc.pid!;
  try {
    const idle = (await memoryOf(pid)).rss;
    const flooders = await Promise.all(Array.from({ length: clients }, (_, i) => flooder(served, i)));
    await settled(pid);
    let end: () => void = () => {};
    const stop = new Promise<void>((res) => {
      end = res;
    });
    const good = wellBehaved(served, stop);
    await sleep(SECONDS * 1000);
    end();
    const { ops, failed } = await good;
    const during = await memoryOf(pid);
    for (const f of flooders) f.close();
    await sleep(SOON_MS);
    const soon = await memoryOf(pid);
    await sleep(SETTLE_MS - SOON_MS);
    const after = await memoryOf(pid);
    const label = `${clients} flooders`;
    return [
      atMost(`${label}: peak RSS of serve`, during.peak, mib(during.peak), "1 GiB", RSS_TARGET),
      reported(`${label}: RSS ${SOON_MS / 1000} s after they close (before: ${mib(idle)})`, mib(soon.rss)),
      reported(`${label}: RSS ${SETTLE_MS / 1000} s after they close`, mib(after.rss)),
      reported(
        `${label}: well-behaved client, ops in ${SECONDS} s`,
        failed ? `${ops} (then failed: ${failed})` : `${ops}`,
      ),
    ];
  } finally {
    served.proc.kill("SIGTERM");
    await served.exited;
  }
}

/** Every round, as bench table rows. */
export async function nbdFloodSection(): Promise<TextRow[]> {
  const rows: TextRow[] = [];
  for (const clients of ROUNDS) rows.push(...(await round(clients)));
  return rows;
}

if (import.meta.main) {
  const rows = await nbdFloodSection();
  for (const r of rows) {
    console.log(`${r.workload.padEnd(62)} ${r.ours.padStart(14)}  ${r.target} ${r.verdict}`);
  }
}
