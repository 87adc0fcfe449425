/**
 * The lease-break loop and the kill -9 loop: `pagedisk serve` (the bundled
 * binary, test/harness/serve.ts) on page blobs in a real Azurite, written
 * through NBD with acknowledged-write accounting (write-ledger.ts).
 *
 * Lease break, each round on a new blob: serve takes the blob's lease and
 * a writer keeps 16 writes in flight; after a random number of
 * acknowledgements the lease is broken and a new owner takes the blob, as
 * the control plane's fencing does. The new owner reads the blob, then
 * writes its own bytes over all of it, and reads it again once serve has
 * stopped. Every acknowledged write must be in the first read (lost
 * otherwise); no write sent after the break may be in it, and the second
 * read must be the new owner's bytes only (stray otherwise).
 *
 * Kill -9, all rounds on one blob whose lease the test holds (serve is
 * given its id, as the agent is by the control plane): serve is killed with
 * SIGKILL after a random number of acknowledgements, writes still in flight,
 * and started again. After each kill, every write ever acknowledged must
 * still be in the blob, unless a later acknowledged write replaced it.
 */
import { randomUUID } from "node:crypto";
import type { ContainerClient } from "@azure/storage-blob";
import type { Azurite } from "../harness/azurite.ts";
import { startServe } from "../harness/serve.ts";
import { Random } from "../fuzz/random.ts";
import { SLOT, WriteLedger, writeUntilStopped } from "./write-ledger.ts";

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;
const SLOTS = SIZE / SLOT;
/** The new owner's bytes: no writer stamp looks like them. */
const FENCE_BYTE = 0xfe;
const MAX_PROBLEMS = 20;
const EXIT_BOUND_MS = 30_000;

/** "running" after `ms`; the timer does not keep the process alive. */
function watchdog(ms: number): Promise<"running"> {
  return new Promise((resolve) => setTimeout(() => resolve("running"), ms).unref());
}

export interface LoopSetup {
  azurite: Azurite;
  /** Where the loops make their blobs; it exists. */
  container: ContainerClient;
  seed: number;
  progress?: (line: string) => void;
}

export interface LeaseBreakCounts {
  tried: number;
  acknowledged: number;
  lost: number;
  stray: number;
}

export interface KillCounts {
  tried: number;
  acknowledged: number;
  lost: number;
}

export interface LoopReport<C> {
  seed: number;
  counts: C;
  /** Writes answered with an error, and never answered: the fenced or killed writer's, expected. */
  refused: number;
  unanswered: number;
  problems: string[];
}

function env(azurite: Azurite): NodeJS.ProcessEnv {
  return { PAGEDISK_STORAGE_CONNECTION_STRING: azurite.connectionString };
}

function blobUrl(setup: LoopSetup, name: string): string {
  return `${setup.azurite.blobEndpoint}/${setup.container.containerName}/${name}`;
}

export async function leaseBreakLoop(setup: LoopSetup & { breaks: number }): Promise<LoopReport<LeaseBreakCounts>> {
  const r = new Random(setup.seed);
  const counts: LeaseBreakCounts = { tried: 0, acknowledged: 0, lost: 0, stray: 0 };
  const report: LoopReport<LeaseBreakCounts> = { seed: setup.seed, counts, refused: 0, unanswered: 0, problems: [] };
  const note = (line: string) => {
    if (report.problems.length < MAX_PROBLEMS) report.problems.push(line);
  };
  for (let round = 0; round < setup.breaks; round++) {
    const name = `break-${setup.seed}-${round}.vhd`;
    const blob = setup.container.getPageBlobClient(name);
    const serve = await startServe(blobUrl(setup, name), ["--create", "--size", "4MiB"], env(setup.azurite));
    const ledger = new WriteLedger(SLOTS);
    const breakAfter = r.between(50, 400);
    /** Writes with a larger sequence number were sent after the lease was broken. */
    let fencedAfter = Number.POSITIVE_INFINITY;
    let fencing: Promise<{ first: Buffer; leaseId: string }> | undefined;
    let refusedOrDone = () => {};
    const writerStopped = new Promise<void>((resolve) => {
      refusedOrDone = resolve;
    });
    const fence = async () => {
      await blob.getBlobLeaseClient().breakLease(0);
      fencedAfter = ledger.sent;
      // The new owner takes the lease only once serve has shown it saw the break (a write
      // refused), or stopped: a writer that went on without a lease meanwhile would land
      // its writes here, where the first read below finds them.
      await writerStopped;
      const owner = blob.getBlobLeaseClient(randomUUID());
      await owner.acquireLease(-1);
      const first = await blob.downloadToBuffer(0, SIZE);
      await blob.uploadPages(Buffer.alloc(SIZE, FENCE_BYTE), 0, SIZE, { conditions: { leaseId: owner.leaseId } });
      return { first, leaseId: owner.leaseId };
    };
    await writeUntilStopped(serve.socket, name, ledger, {
      maxWrites: breakAfter + 20_000,
      keepGoing: () => {
        if (!fencing && ledger.counts.acknowledged >= breakAfter) fencing = fence();
        return true;
      },
      onRefused: () => refusedOrDone(),
    }).finally(() => refusedOrDone());
    if (!fencing) {
      note(`round ${round}: the writer stopped after ${ledger.counts.acknowledged} writes, before the break`);
      await serve.stop("SIGKILL");
      continue;
    }
    const { first, leaseId } = await fencing;
    // A fenced serve fails the volume and exits 2 by itself. The bound only keeps a
    // serve that never does from holding the loop; it is far beyond a healthy exit.
    const exit = await Promise.race([serve.exited, watchdog(EXIT_BOUND_MS)]);
    if (exit !== 2) note(`round ${round}: serve ${exit === "running" ? "still running" : `exited ${exit}`} after the break, not 2`);
    await serve.stop("SIGKILL");

    const judged = ledger.judge(first, fencedAfter);
    const second = await blob.downloadToBuffer(0, SIZE);
    let overFence = 0;
    for (let slot = 0; slot < SLOTS; slot++) {
      const bytes = second.subarray(slot * SLOT, (slot + 1) * SLOT);
      if (!bytes.every((b) => b === FENCE_BYTE)) overFence++;
    }
    counts.tried++;
    counts.acknowledged += ledger.counts.acknowledged;
    counts.lost += judged.lost;
    counts.stray += judged.stray + overFence;
    report.refused += ledger.counts.refused;
    report.unanswered += ledger.counts.unanswered;
    for (const p of judged.problems) note(`round ${round} (${name}): ${p}`);
    if (overFence > 0) note(`round ${round} (${name}): ${overFence} slots written over the new owner's bytes`);
    await blob.getBlobLeaseClient(leaseId).releaseLease();
    setup.progress?.(`lease breaks: ${round + 1}/${setup.breaks}, ${JSON.stringify(counts)}`);
  }
  return report;
}

export async function killLoop(setup: LoopSetup & { kills: number }): Promise<LoopReport<KillCounts>> {
  const r = new Random(setup.seed);
  const counts: KillCounts = { tried: 0, acknowledged: 0, lost: 0 };
  const report: LoopReport<KillCounts> = { seed: setup.seed, counts, refused: 0, unanswered: 0, problems: [] };
  const note = (line: string) => {
    if (report.problems.length < MAX_PROBLEMS) report.problems.push(line);
  };
  const name = `kill-${setup.seed}.vhd`;
  const blob = setup.container.getPageBlobClient(name);
  await blob.create(SIZE);
  const leaseId = randomUUID();
  await blob.getBlobLeaseClient(leaseId).acquireLease(-1);
  const ledger = new WriteLedger(SLOTS);
  for (let round = 0; round < setup.kills; round++) {
    const serve = await startServe(blobUrl(setup, name), ["--lease", leaseId], env(setup.azurite));
    const killAt = ledger.counts.acknowledged + r.between(50, 400);
    let killed: Promise<number | string> | undefined;
    await writeUntilStopped(serve.socket, name, ledger, {
      maxWrites: 100_000,
      keepGoing: () => {
        // Killed while the writes after this one are still in flight.
        if (!killed && ledger.counts.acknowledged >= killAt) killed = serve.stop("SIGKILL");
        return true;
      },
    });
    const exit = await (killed ?? serve.stop("SIGKILL"));
    if (!killed) note(`round ${round}: the writer stopped before the kill (${ledger.counts.refused} refused)`);
    else if (exit !== "SIGKILL") note(`round ${round}: serve ended with ${exit} before it could be killed`);
    const judged = ledger.judge(await blob.downloadToBuffer(0, SIZE));
    counts.tried++;
    counts.lost += judged.lost;
    for (const p of judged.problems) note(`after kill ${round + 1}: ${p}`);
    setup.progress?.(`kill -9: ${round + 1}/${setup.kills}, ${JSON.stringify({ ...counts, acknowledged: ledger.counts.acknowledged })}`);
  }
  counts.acknowledged = ledger.counts.acknowledged;
  report.refused = ledger.counts.refused;
  report.unanswered = ledger.counts.unanswered;
  await blob.getBlobLeaseClient(leaseId).releaseLease();
  return report;
}
