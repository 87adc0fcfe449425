/**
 * Replicas (issue 5): what a second replica costs the writer, what a resync
 * after an outage copies, and how fast a rebuild fills a new replica. All of
 * it through the engine the agent serves volumes with (openReplicatedVolume),
 * in this process; no NBD, so the numbers are the replica path's own.
 *
 * - Write throughput, 2 replicas / 1, target >= 0.8: over memory backends
 *   and over page blobs in two Azurite instances (two "storage accounts").
 *   Both are bound by this machine, not by the fan-out: each replica's bytes
 *   cost a full memcpy into the memory backend (1 MiB writes run at memory
 *   bandwidth, and a second copy halves them or worse), and every Azurite
 *   shares the same 2 cores with us. In Azure the replicas sit in separate
 *   accounts and the writes to them overlap; the latency-bound row shows
 *   that overlap (each request held 50 ms at a proxy, so waiting, not CPU,
 *   bounds it), and the 4 KiB row the per-request CPU cost of the second
 *   member.
 * - Resync: one replica's pool cut (a fault proxy answering 403), writes
 *   made meanwhile, the pool back, `resync()`: bytes copied against bytes
 *   written during the outage, for sequential writes and for scattered
 *   64 KiB writes (where the dirty log's 1 MiB granularity shows).
 * - Rebuild: a new empty blob in the second Azurite filled from a replica
 *   holding 256 MiB, MiB/s.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { MemoryBackend } from "../agent/engine/memory.ts";
import { PageBlobBackend } from "../agent/engine/pageblob-backend.ts";
import { openReplicatedVolume, type ReplicaMember, type ReplicatedVolume } from "../agent/engine/replicas.ts";
import { openPageBlob } from "../agent/pageblob/connect.ts";
import type { BlockDevice } from "../agent/nbd/device.ts";
import { type Azurite, startAzurite } from "../test/harness/azurite.ts";
import { startFaultProxy } from "../test/harness/fault-proxy.ts";
import { closedLoop } from "./closed-loop.ts";
import { percentile, type TextRow } from "./rows.ts";

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const SECTION = "replicas: 2 / 1";
/** Delay per request of the latency-bound row: far above Azurite's own time per 64 KiB write. */
const LATENCY_MS = 50;

type Open = (
  members: ReplicaMember[],
  extra?: Partial<Parameters<typeof openReplicatedVolume>[1]>,
) => Promise<ReplicatedVolume>;

interface Options {
  seconds: number;
  rounds: number;
}

/** Bytes per second of `op` run by `depth` workers for `seconds`, `bytes` each. */
async function rate(depth: number, seconds: number, bytes: number, op: (n: number) => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  const ops = await closedLoop(depth, seconds, op);
  return (ops * bytes) / ((performance.now() - t0) / 1000);
}

function sequentialWrites(vol: BlockDevice, bs: number, depth: number, seconds: number): Promise<number> {
  const data = randomBytes(bs);
  const slots = Math.floor(vol.size / bs);
  return rate(depth, seconds, bs, (n) => vol.write((n % slots) * bs, data));
}

function randomWrites(vol: BlockDevice, bs: number, depth: number, seconds: number): Promise<number> {
  const data = randomBytes(bs);
  const slots = Math.floor(vol.size / bs);
  return rate(depth, seconds, bs, () => vol.write(Math.floor(Math.random() * slots) * bs, data));
}

const fmtBw = (bytesPerSec: number) => `${(bytesPerSec / MiB).toFixed(1)} MiB/s`;
const fmtMiB = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

function ratioRow(workload: string, two: number, one: number, target: number, fmt: (v: number) => string): TextRow {
  const ratio = two / one;
  return {
    section: SECTION,
    workload,
    ours: fmt(two),
    peer: `${fmt(one)} (1 replica)`,
    ratio: ratio.toFixed(2),
    target: `>= ${target}`,
    verdict: ratio >= target ? "met" : "MISSED",
  };
}

function reported(workload: string, shown: string, peer = "-"): TextRow {
  return { section: "replicas", workload, ours: shown, peer, ratio: "-", target: "-", verdict: "" };
}

export async function replicasSection(opts: Options): Promise<TextRow[]> {
  const rows: TextRow[] = [];
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-bench-replicas-"));
  let epoch = 0;
  // A fresh epoch per volume: each starts with no dirty log.
  const open: Open = (members, extra = {}) => openReplicatedVolume(members, { ...extra, dirtyLog: { dir, epoch: ++epoch } });

  /** Medians of rounds alternating 2 replicas and 1 replica. */
  async function compare(measure: (replicas: 1 | 2) => Promise<number>): Promise<[number, number]> {
    const two: number[] = [];
    const one: number[] = [];
    for (let i = 0; i < opts.rounds; i++) {
      two.push(await measure(2));
      one.push(await measure(1));
    }
    return [percentile(two, 50), percentile(one, 50)];
  }

  try {
    // Memory members: the writer's own cost of a second replica.
    const memory = (n: 1 | 2) =>
      Array.from({ length: n }, (_, i): ReplicaMember => ({ id: `m${i}`, pool: `mem${i}`, device: new MemoryBackend({ size: SIZE }) }));
    const onMemory = (run: (vol: ReplicatedVolume) => Promise<number>) => async (n: 1 | 2) => {
      const vol = await open(memory(n));
      try {
        return await run(vol);
      } finally {
        await vol.close();
      }
    };
    const [mw2, mw1] = await compare(onMemory((vol) => sequentialWrites(vol, MiB, 8, opts.seconds)));
    rows.push(ratioRow("memory write-1m-qd8", mw2, mw1, 0.8, fmtBw));
    const [mr2, mr1] = await compare(onMemory((vol) => randomWrites(vol, 4096, 32, opts.seconds)));
    rows.push(ratioRow("memory randwrite-4k-qd32", mr2, mr1, 0.8, (v) => `${Math.round(v / 4096).toLocaleString("en-US")} IOPS`));

    rows.push(...(await azuriteRows(opts, open, compare)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

async function azuriteRows(
  opts: Options,
  open: Open,
  compare: (measure: (replicas: 1 | 2) => Promise<number>) => Promise<[number, number]>,
): Promise<TextRow[]> {
  const rows: TextRow[] = [];
  const accounts: Azurite[] = [await startAzurite({ inMemory: true }), await startAzurite({ inMemory: true })];
  const proxy = await startFaultProxy(accounts[1]!.blobEndpoint);
  let blobs = 0;
  try {
    for (const a of accounts) await BlobServiceClient.fromConnectionString(a.connectionString).getContainerClient("bench").create();
    /** A new blob of SIZE in account `i` (through the proxy for the second when `proxied`). */
    const blob = async (i: 0 | 1, proxied = false) => {
      const a = accounts[i]!;
      const endpoint = proxied ? proxy.blobEndpoint : a.blobEndpoint;
      const pb = openPageBlob(`${endpoint}/bench/r${blobs++}.vhd`, { connectionString: a.connectionString });
      await pb.create(SIZE);
      return new PageBlobBackend(pb, SIZE);
    };
    const members = async (n: 1 | 2): Promise<ReplicaMember[]> => {
      const list: ReplicaMember[] = [{ id: "a", pool: "account-1", device: await blob(0) }];
      if (n === 2) list.push({ id: "b", pool: "account-2", device: await blob(1) });
      return list;
    };

    const [aw2, aw1] = await compare(async (n) => {
      const vol = await open(await members(n));
      try {
        return await sequentialWrites(vol, MiB, 8, opts.seconds);
      } finally {
        await vol.close();
      }
    });
    rows.push(ratioRow("Azurite write-1m-qd8 (two accounts)", aw2, aw1, 0.8, fmtBw));

    // Latency-bound: every request held LATENCY_MS at a proxy in front of each account, so
    // the time goes to waiting as it does across a network, not to the emulators' CPU.
    const delayed = await Promise.all(accounts.map((a) => startFaultProxy(a.blobEndpoint)));
    try {
      for (const p of delayed) p.inject({ fault: { type: "delay", ms: LATENCY_MS } });
      const delayedMembers = async (n: 1 | 2): Promise<ReplicaMember[]> => {
        const list: ReplicaMember[] = [];
        for (let i = 0; i < n; i++) {
          const a = accounts[i]!;
          const pb = openPageBlob(`${delayed[i]!.blobEndpoint}/bench/r${blobs++}.vhd`, { connectionString: a.connectionString });
          await pb.create(SIZE);
          list.push({ id: `d${i}`, pool: `account-${i + 1}`, device: new PageBlobBackend(pb, SIZE) });
        }
        return list;
      };
      const [lw2, lw1] = await compare(async (n) => {
        const vol = await open(await delayedMembers(n));
        try {
          return await randomWrites(vol, 64 * 1024, 8, opts.seconds);
        } finally {
          await vol.close();
        }
      });
      rows.push(ratioRow(`Azurite +${LATENCY_MS} ms per request, randwrite-64k-qd8`, lw2, lw1, 0.8, fmtBw));
    } finally {
      for (const p of delayed) await p.close();
    }

    // Resync after an outage of the second account, sequential then scattered writes.
    for (const kind of ["sequential 1 MiB", "scattered 64 KiB"] as const) {
      const vol = await open(
        [
          { id: "a", pool: "account-1", device: await blob(0) },
          { id: "b", pool: "account-2", device: await blob(1, true) },
        ],
        { replicaDeadlineMs: 500 },
      );
      try {
        await vol.write(0, randomBytes(4 * MiB));
        proxy.inject({ fault: { type: "status", status: 403, code: "AuthenticationFailed" } });
        const bs = kind === "sequential 1 MiB" ? MiB : 64 * 1024;
        const data = randomBytes(bs);
        let written = 0;
        for (let i = 0; i < (16 * MiB) / bs; i++) {
          const offset = kind === "sequential 1 MiB" ? 32 * MiB + i * bs : Math.floor(Math.random() * (SIZE / bs)) * bs;
          await vol.write(offset, data);
          written += bs;
        }
        proxy.clear();
        const before = vol.metrics().replication.copiedBytes;
        await vol.resync("b");
        const copied = vol.metrics().replication.copiedBytes - before;
        rows.push(reported(`resync after outage, ${kind} writes`, `${fmtMiB(copied)} copied`, `${fmtMiB(written)} written during outage (${(copied / written).toFixed(2)}x)`));
      } finally {
        await vol.close();
      }
    }

    // Rebuild: a replica holding SIZE bytes of data copied onto a new blob.
    const source = await open([{ id: "a", pool: "account-1", device: await blob(0) }]);
    try {
      const chunk = randomBytes(4 * MiB);
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next * 4 * MiB < SIZE) await source.write(next++ * 4 * MiB, chunk);
        }),
      );
      const t0 = performance.now();
      await source.rebuild({ id: "c", pool: "account-2", device: await blob(1) });
      const seconds = (performance.now() - t0) / 1000;
      rows.push(reported(`rebuild of ${SIZE / MiB} MiB onto a new blob`, fmtBw(SIZE / seconds), `${seconds.toFixed(1)} s`));
    } finally {
      await source.close();
    }
  } finally {
    await proxy.close();
    for (const a of accounts) await a.dispose();
  }
  return rows;
}
