/**
 * Acknowledged-write accounting for the lease-break and kill -9 loops.
 *
 * A writer keeps many 4 KiB writes in flight over NBD, each to a slot of
 * the volume, never two at once to the same slot, each stamped with its
 * slot and a sequence number that only grows. The ledger remembers, per
 * slot, the last write the server acknowledged, and the last it was sent.
 * Reading the volume's bytes afterwards (straight from the page blob) says,
 * slot by slot, which write is there:
 *
 * - lost:  a slot holds an older write than the last one acknowledged for
 *          it, or nothing, or a torn write: an acknowledged write did not
 *          survive;
 * - stray: a slot holds a write sent after a given moment (the lease
 *          break): it landed although its writer had been fenced.
 *
 * A write that was sent but never answered may or may not be there: NBD
 * promises nothing about it, and neither does the ledger.
 */
import { CMD, RawClient } from "../nbd/raw-client.ts";

export const SLOT = 4096;
const MAGIC = 0x5044574c; // "PDWL"

/** The bytes of write `seq` to `slot`: a header, then a fill that depends on `seq`. */
export function stamp(slot: number, seq: number): Buffer {
  const b = Buffer.alloc(SLOT, seq & 0xff);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt32BE(slot, 4);
  b.writeUInt32BE(seq, 8);
  return b;
}

/** The write a slot's bytes hold: its sequence number, "empty" (never written or zeroed), or "torn". */
export function readStamp(bytes: Buffer, slot: number): number | "empty" | "torn" | "other" {
  if (bytes.every((b) => b === 0)) return "empty";
  if (bytes.readUInt32BE(0) !== MAGIC) return "other";
  const seq = bytes.readUInt32BE(8);
  if (bytes.readUInt32BE(4) !== slot || !bytes.equals(stamp(slot, seq))) return "torn";
  return seq;
}

export interface LedgerCounts {
  /** Writes acknowledged (each one checked). */
  acknowledged: number;
  /** Writes answered with an error (the fenced or dying writer's). */
  refused: number;
  /** Writes never answered (the connection ended first). */
  unanswered: number;
}

export class WriteLedger {
  readonly slots: number;
  /** Last acknowledged sequence number per slot (0: none). */
  readonly #acked: Uint32Array;
  /** Sequence numbers sent so far; the next write gets `sent + 1`. */
  sent = 0;
  readonly counts: LedgerCounts = { acknowledged: 0, refused: 0, unanswered: 0 };

  constructor(slots: number) {
    this.slots = slots;
    this.#acked = new Uint32Array(slots);
  }

  acknowledged(slot: number, seq: number): void {
    this.counts.acknowledged++;
    if (seq > this.#acked[slot]!) this.#acked[slot] = seq;
  }

  /**
   * Judge the volume's bytes (from offset 0, `slots` slots). `strayAfter`:
   * writes with a larger sequence number were sent after the writer was
   * fenced, and must not be there.
   */
  judge(volume: Buffer, strayAfter = Number.POSITIVE_INFINITY): { lost: number; stray: number; problems: string[] } {
    let lost = 0;
    let stray = 0;
    const problems: string[] = [];
    for (let slot = 0; slot < this.slots; slot++) {
      const found = readStamp(volume.subarray(slot * SLOT, (slot + 1) * SLOT), slot);
      const acked = this.#acked[slot]!;
      if (typeof found === "number" && found > strayAfter) {
        stray++;
        if (problems.length < 10) problems.push(`slot ${slot}: write ${found}, sent after the fence, landed`);
      }
      if (acked === 0) continue;
      if (typeof found !== "number" || found < acked) {
        lost++;
        if (problems.length < 10) problems.push(`slot ${slot}: acknowledged write ${acked} lost (found ${found})`);
      }
    }
    return { lost, stray, problems };
  }
}

export interface WriterOptions {
  /** Writes in flight at once (default 16); less than the ledger's slots. */
  depth?: number;
  /** Called after each acknowledgement; the writer stops sending when it returns false. */
  keepGoing?: () => boolean;
  /** Stop after sending this many writes in all (a bound, should nothing stop it). */
  maxWrites: number;
  /** Called when a write is refused (once per refusal). */
  onRefused?: () => void;
}

/**
 * Write through `socket`'s export `name` until the connection ends, a write
 * is refused, `keepGoing` says stop, or `maxWrites` were sent; then wait
 * for every reply still owed (or for the end of the connection). Slots are
 * used in turn, so a slot is written again only after `slots` others.
 */
export async function writeUntilStopped(
  socket: string,
  name: string,
  ledger: WriteLedger,
  opts: WriterOptions,
): Promise<void> {
  const depth = opts.depth ?? 16;
  if (depth >= ledger.slots) throw new Error("depth must be below the number of slots");
  const client = await RawClient.connect(socket);
  const inflight = new Map<bigint, { slot: number; seq: number }>();
  let sending = true;
  let written = 0;
  try {
    await client.handshake(name);
    const send = () => {
      const seq = ++ledger.sent;
      const slot = seq % ledger.slots;
      inflight.set(BigInt(seq), { slot, seq });
      written++;
      client.send({ type: CMD.WRITE, handle: BigInt(seq), offset: slot * SLOT, payload: stamp(slot, seq) });
    };
    while (sending && inflight.size < depth && written < opts.maxWrites) send();
    while (inflight.size > 0) {
      const reply = await client.reply();
      const w = inflight.get(reply.handle);
      if (!w) throw new Error(`reply to a write never sent (handle ${reply.handle})`);
      inflight.delete(reply.handle);
      if (reply.error === 0) {
        ledger.acknowledged(w.slot, w.seq);
        if (opts.keepGoing && !opts.keepGoing()) sending = false;
      } else {
        ledger.counts.refused++;
        sending = false;
        opts.onRefused?.();
      }
      if (sending && written < opts.maxWrites) send();
    }
  } catch (err) {
    // The server went away (fenced and exited, or killed): what was owed stays unanswered.
    if (!client.socket.destroyed && !/closed/.test((err as Error).message)) throw err;
  } finally {
    ledger.counts.unanswered += inflight.size;
    client.close();
  }
}
