/**
 * The NBD fuzzer: many short sessions of hostile or broken clients (plans
 * in nbd-plans.ts) against a real NbdServer over memory exports, on TCP so
 * that connections can be reset, while a well-behaved client keeps using an
 * export of its own.
 *
 * Exports: `disk` (writable: the fuzz may change it at will), `golden`
 * (filled before the fuzz and served read-only: any write that gets
 * through changes it), and `keeper` (the well-behaved client's; the fuzz
 * never names it). Half of `keeper` is written over NBD before the fuzz
 * and never again.
 *
 * What is counted, per session:
 * - failed:  the well-behaved client was not served correctly after the
 *            session (or while unread sessions held their replies), a
 *            well-framed session's replies were wrong, the server sent more
 *            than it could owe, or a request reached the server's
 *            "unexpected error" path;
 * - crashed: a connection was refused, the server's catch-all for bugs
 *            logged an error, or an exception escaped to the process;
 * - hung:    the server did not end a session after the client's FIN (and
 *            reading everything it sent), or kept a connection open after
 *            the fuzz was over;
 * - lost:    bytes of `golden` or of `keeper`'s written half that changed.
 *
 * Ending a session is the server's move, not a timer's: the client sends
 * FIN and reads until the server closes. The watchdog only turns a server
 * that never does into a count instead of a test that never ends; it is far
 * longer than any healthy session on a loaded machine, and nothing
 * asserts how fast anything is. A run stops starting sessions after a few
 * failures, so a broken server fails in seconds, not hours.
 */
import { connect, type Socket } from "node:net";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import type { BlockDevice } from "../../agent/nbd/device.ts";
import type { Logger } from "../../agent/nbd/logger.ts";
import { NbdServer } from "../../agent/nbd/server.ts";
import { CMD, FLAG, RawClient } from "../nbd/raw-client.ts";
import { type Plan, planSession, type SessionKind, SESSION_KINDS, type Target } from "./nbd-plans.ts";
import { checkReplies } from "./nbd-wire.ts";
import { Random } from "./random.ts";

export interface NbdFuzzOptions {
  sessions: number;
  seed: number;
  /** Sessions at once (default 4). */
  concurrency?: number;
  /** How long a session or a probe may go unanswered before it counts as hung or failed (default 15 s). */
  watchdogMs?: number;
  /** Stop starting sessions once this many have failed, crashed or hung (default 3): a broken server fails fast. */
  maxFailures?: number;
  /**
   * Wrap the well-behaved client's device. Self-tests use it to model a
   * server that stops serving other clients.
   */
  wrapKeeper?: (device: BlockDevice) => BlockDevice;
  /** Progress lines, about every tenth of the run (the soak prints them). */
  progress?: (line: string) => void;
}

export interface NbdFuzzCounts {
  tried: number;
  failed: number;
  crashed: number;
  hung: number;
  lost: number;
}

export interface NbdFuzzReport {
  seed: number;
  counts: NbdFuzzCounts;
  /** Sessions run, by kind. */
  kinds: Record<SessionKind, number>;
  /** What went wrong, first ones only, each with the session's index, seed and kind. */
  problems: string[];
}

const KiB = 1024;
const MiB = 1024 * 1024;
const SIZE = 4 * MiB;
const KEEPER_SIZE = MiB;
/** The half of `keeper` written before the fuzz; the other half is the probes' scratch space. */
const PROTECTED = KEEPER_SIZE / 2;
const SLOT = 4 * KiB;
const SLOTS = (KEEPER_SIZE - PROTECTED) / SLOT;
const MAX_PROBLEMS = 20;
/**
 * How long an unread session waits for the server to say it has stopped
 * reading from it (a connection over its in-flight cap) before the
 * well-behaved client is probed anyway: a server that bounds memory another
 * way may never say so.
 */
const SETTLE_MS = 5_000;
const EXPIRED = Symbol("expired");

/** Run the fuzz; never throws for what the server does, only counts it. */
export async function fuzzNbd(opts: NbdFuzzOptions): Promise<NbdFuzzReport> {
  const watchdogMs = opts.watchdogMs ?? 15_000;
  const maxFailures = opts.maxFailures ?? 3;
  const root = new Random(opts.seed);
  const seeds = Array.from({ length: opts.sessions }, () => root.u32());
  const goldenBytes = new Random(root.u32()).bytes(SIZE);
  const keeperBytes = new Random(root.u32()).bytes(PROTECTED);

  const golden = new MemoryBackend({ size: SIZE });
  for (let at = 0; at < SIZE; at += MiB) await golden.write(at, goldenBytes.subarray(at, at + MiB));
  const disk = new MemoryBackend({ size: SIZE, chunkSize: 64 * KiB });
  const keeperDevice = new MemoryBackend({ size: KEEPER_SIZE });
  const keeper = opts.wrapKeeper ? opts.wrapKeeper(keeperDevice) : keeperDevice;
  const log = new CountingLogger();
  const server = new NbdServer({
    exports: { disk, golden: { device: golden, readOnly: true }, keeper },
    logger: log,
  });
  const bound = await server.listen({ host: "127.0.0.1", port: 0 });
  if (!("port" in bound)) throw new Error("expected a TCP address");
  const address = { host: bound.host, port: bound.port };
  const targets: Target[] = [
    { name: "disk", size: SIZE, readOnly: false },
    { name: "golden", size: SIZE, readOnly: true, contents: goldenBytes },
  ];

  const counts: NbdFuzzCounts = { tried: 0, failed: 0, crashed: 0, hung: 0, lost: 0 };
  const kinds = Object.fromEntries(SESSION_KINDS.map(([k]) => [k, 0])) as Record<SessionKind, number>;
  const problems: string[] = [];
  const note = (line: string) => {
    if (problems.length < MAX_PROBLEMS) problems.push(line);
  };
  const escaped = (err: unknown) => {
    counts.crashed++;
    note(`an exception escaped to the process: ${String(err)}`);
  };
  process.on("uncaughtException", escaped);
  process.on("unhandledRejection", escaped);

  const good = new WellBehaved(address, watchdogMs, keeperBytes);
  try {
    // Data written before the fuzz, by a client, through the server.
    const setup = await good.writeProtected();
    if (setup) throw new Error(`the well-behaved client could not write before the fuzz: ${setup}`);

    let next = 0;
    const tenth = Math.max(1, Math.floor(opts.sessions / 10));
    const worker = async () => {
      while (next < opts.sessions && counts.failed + counts.crashed + counts.hung < maxFailures) {
        const index = next++;
        // The first sessions take each kind in turn, so that even a short run has them all.
        const plan = planSession(new Random(seeds[index]!), targets, SESSION_KINDS[index]?.[0]);
        kinds[plan.kind]++;
        const what = `session ${index} (seed ${seeds[index]}, ${plan.kind})`;
        const outcome = await runSession(address, plan, watchdogMs, {
          probe: () => good.probe(),
          held: () => log.pausedAfter(log.paused, Math.min(watchdogMs, SETTLE_MS)),
        });
        counts.tried++;
        if (outcome.result === "refused") {
          counts.crashed++;
          note(`${what}: connection refused: ${outcome.detail}`);
        } else if (outcome.result === "hung") {
          counts.hung++;
          note(`${what}: the server did not end the session after the client's FIN`);
        } else {
          // Served throughout: after every session, whatever it did.
          const served = outcome.result === "failed" ? undefined : await good.probe();
          if (outcome.result === "failed" || served) {
            counts.failed++;
            note(`${what}: ${outcome.result === "failed" ? outcome.detail : served}`);
          }
        }
        if ((index + 1) % tenth === 0) {
          opts.progress?.(`nbd fuzz: ${index + 1}/${opts.sessions} sessions, ${JSON.stringify(counts)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency ?? 4 }, worker));

    const last = await good.probe();
    if (last) {
      counts.failed++;
      note(`after the fuzz: ${last}`);
    }
  } finally {
    good.close();
    // Every fuzz connection must be gone: those reset or destroyed included.
    const gone = await bounded(log.until(() => server.stats.connections === 0), watchdogMs);
    if (gone === EXPIRED) {
      counts.hung += server.stats.connections;
      note(`${server.stats.connections} connections still open after the fuzz`);
    }
    counts.lost += await changedBytes(golden, goldenBytes);
    counts.lost += await changedBytes(keeperDevice, keeperBytes);
    if (counts.lost > 0) note(`${counts.lost} bytes of data written before the fuzz changed`);
    counts.crashed += log.errors.length;
    for (const e of log.errors) note(`server error log: ${e}`);
    counts.failed += log.unexpected.length;
    for (const e of log.unexpected) note(`server warning: ${e}`);
    await bounded(server.close({ graceMs: 1000 }), watchdogMs);
    process.off("uncaughtException", escaped);
    process.off("unhandledRejection", escaped);
  }
  return { seed: opts.seed, counts, kinds, problems };
}

type Outcome = { result: "ok" } | { result: "failed" | "refused"; detail: string } | { result: "hung" };

/** One session: send the plan, then leave as it says, and judge what came back. */
async function runSession(
  address: { host: string; port: number },
  plan: Plan,
  watchdogMs: number,
  good: {
    probe: () => Promise<string | undefined>;
    /** Resolves once the server holds replies it cannot send (or after a while, if it never says so). */
    held: () => Promise<void>;
  },
): Promise<Outcome> {
  const socket = await open(address);
  if (socket instanceof Error) return { result: "refused", detail: socket.message };
  // Resets and writes after the server hung up are what this client provokes.
  socket.on("error", () => {});
  // Its companions in a flood: the same requests, replies unread, left with it.
  const others: Socket[] = [];
  for (let i = 1; i < (plan.connections ?? 1); i++) {
    const other = await open(address);
    if (other instanceof Error) {
      socket.destroy();
      for (const o of others) o.destroy();
      return { result: "refused", detail: other.message };
    }
    other.on("error", () => {});
    others.push(other);
  }
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  const received: Buffer[] = [];
  let bytes = 0;
  let overflow = false;
  const onData = (d: Buffer) => {
    bytes += d.length;
    if (plan.wellFramed) received.push(d);
    if (bytes > plan.maxReplyBytes && !overflow) {
      overflow = true;
      socket.destroy();
    }
  };
  // An unread session does not read at all until it leaves: its replies pile up at the server.
  if (!plan.unread) socket.on("data", onData);
  for (const chunk of plan.unread ? [] : plan.chunks) {
    if (socket.destroyed) break;
    socket.write(chunk);
    if (plan.drip) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  if (plan.unread) {
    const holding = good.held();
    for (const s of [socket, ...others]) for (const chunk of plan.chunks) if (!s.destroyed) s.write(chunk);
    await holding;
    let problem: string | undefined;
    for (let i = 0; i < 3 && !problem; i++) problem = await good.probe();
    for (const o of others) o.destroy();
    if (problem) {
      socket.destroy();
      const who = others.length > 0 ? `${others.length + 1} clients` : "a client";
      return { result: "failed", detail: `while ${who} left their replies unread: ${problem}` };
    }
    if (plan.unread === "destroy") {
      socket.destroy();
      return { result: "ok" };
    }
    socket.on("data", onData);
  }
  if (plan.reset) {
    if (!socket.destroyed) socket.resetAndDestroy();
    return { result: "ok" };
  }
  socket.end();
  if ((await bounded(closed, watchdogMs)) === EXPIRED) {
    socket.destroy();
    return { result: "hung" };
  }
  if (overflow) return { result: "failed", detail: `the server sent more than ${plan.maxReplyBytes} bytes` };
  if (plan.wellFramed) {
    const wrong = checkReplies(Buffer.concat(received), plan.wellFramed);
    if (wrong) return { result: "failed", detail: wrong };
  }
  return { result: "ok" };
}

/** A connected socket, or the error that prevented it. */
function open(address: { host: string; port: number }): Promise<Socket | Error> {
  return new Promise((resolve) => {
    const s = connect(address);
    s.once("connect", () => resolve(s));
    s.once("error", (err) => resolve(err));
  });
}

/**
 * The well-behaved client: one connection to `keeper`, structured replies.
 * A probe writes a 4 KiB slot of the scratch half and reads it back, and
 * reads 4 KiB of the protected half; probes run one at a time.
 */
class WellBehaved {
  readonly #address: { host: string; port: number };
  readonly #watchdogMs: number;
  readonly #protected: Buffer;
  #client: RawClient | undefined;
  #n = 0;
  #chain: Promise<unknown> = Promise.resolve();

  constructor(address: { host: string; port: number }, watchdogMs: number, protectedBytes: Buffer) {
    this.#address = address;
    this.#watchdogMs = watchdogMs;
    this.#protected = protectedBytes;
  }

  /** Write the protected half; undefined when every write was acknowledged. */
  writeProtected(): Promise<string | undefined> {
    return this.#serial(async (c) => {
      for (let at = 0; at < PROTECTED; at += 128 * KiB) {
        const payload = this.#protected.subarray(at, at + 128 * KiB);
        const handle = BigInt(++this.#n);
        const reply = await c.request({ type: CMD.WRITE, handle, offset: at, flags: FLAG.FUA, payload });
        if (reply.error !== 0) return `write at ${at} failed with error ${reply.error}`;
      }
      return undefined;
    });
  }

  /** One round of service; what was wrong, or undefined. */
  probe(): Promise<string | undefined> {
    return this.#serial(async (c) => {
      const n = ++this.#n;
      const slot = PROTECTED + (n % SLOTS) * SLOT;
      const data = Buffer.alloc(SLOT, n & 0xff);
      data.writeUInt32BE(n, 0);
      const w = await c.request({ type: CMD.WRITE, handle: BigInt(n) * 3n, offset: slot, flags: FLAG.FUA, payload: data });
      if (w.error !== 0) return `probe ${n}: write failed with error ${w.error}`;
      const back = await c.request({ type: CMD.READ, handle: BigInt(n) * 3n + 1n, offset: slot, length: SLOT });
      if (back.error !== 0 || !back.data?.equals(data)) return `probe ${n}: read back other bytes than written`;
      const at = (n * SLOT) % PROTECTED;
      const old = await c.request({ type: CMD.READ, handle: BigInt(n) * 3n + 2n, offset: at, length: SLOT });
      if (old.error !== 0 || !old.data?.equals(this.#protected.subarray(at, at + SLOT))) {
        return `probe ${n}: data written before the fuzz read back wrong at ${at}`;
      }
      return undefined;
    });
  }

  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }

  /** Run `step` after the ones before it, with a connection, within the watchdog. */
  #serial(step: (c: RawClient) => Promise<string | undefined>): Promise<string | undefined> {
    const run = async (): Promise<string | undefined> => {
      const attempt = (async () => {
        this.#client ??= await this.#connect();
        return step(this.#client);
      })();
      const result = await bounded(
        attempt.catch((err: unknown) => `the well-behaved client's connection failed: ${(err as Error).message}`),
        this.#watchdogMs,
      );
      if (result === EXPIRED || typeof result === "string") {
        // Its replies may still come: start again on a new connection.
        this.close();
        return result === EXPIRED ? `unanswered after ${this.#watchdogMs} ms` : result;
      }
      return undefined;
    };
    const done = this.#chain.then(run);
    this.#chain = done;
    return done;
  }

  async #connect(): Promise<RawClient> {
    const c = await RawClient.connect(this.#address);
    await c.handshake("keeper", { structured: true });
    return c;
  }
}

/**
 * Counts what the server logs, keeping only what the fuzz reports: errors
 * (its catch-all for bugs) and requests that failed with an unexpected
 * error. `until()` resolves once a condition holds, looked at after every
 * record (the server logs each disconnect).
 */
class CountingLogger implements Logger {
  readonly errors: string[] = [];
  readonly unexpected: string[] = [];
  /** Times a connection was paused for holding too much in flight. */
  paused = 0;
  #waiters: { holds: () => boolean; resolve: () => void }[] = [];

  debug(_obj: object, msg = ""): void {
    if (msg.includes("paused")) this.paused++;
    this.#wake();
  }
  info(_obj: object, _msg?: string): void {
    this.#wake();
  }
  warn(obj: object, msg = ""): void {
    if (msg.includes("unexpected")) this.unexpected.push(`${msg} ${describe(obj)}`);
    this.#wake();
  }
  error(obj: object, msg = ""): void {
    this.errors.push(`${msg} ${describe(obj)}`);
    this.#wake();
  }

  /** Resolves at the next pause after `seen` pauses, or after `ms` without one. */
  async pausedAfter(seen: number, ms: number): Promise<void> {
    const holds = () => this.paused > seen;
    await bounded(this.until(holds), ms);
    this.#waiters = this.#waiters.filter((w) => w.holds !== holds);
  }

  until(holds: () => boolean): Promise<void> {
    if (holds()) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ holds, resolve }));
  }

  #wake(): void {
    if (this.#waiters.length === 0) return;
    // The server updates its counts just before it logs; look once the record is out.
    queueMicrotask(() => {
      const ready = this.#waiters.filter((w) => w.holds());
      this.#waiters = this.#waiters.filter((w) => !ready.includes(w));
      for (const w of ready) w.resolve();
    });
  }
}

function describe(obj: object): string {
  const err = (obj as { err?: unknown }).err;
  return err instanceof Error ? (err.stack ?? err.message) : JSON.stringify(obj, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
}

/** Bytes of `device` from 0 that differ from `want`. */
async function changedBytes(device: BlockDevice, want: Buffer): Promise<number> {
  const have = Buffer.from(await device.read(0, want.length));
  if (have.equals(want)) return 0;
  let n = 0;
  for (let i = 0; i < want.length; i++) if (have[i] !== want[i]) n++;
  return n;
}

/** `p`, or EXPIRED after `ms`; the timer never outlives the race. */
async function bounded<T>(p: Promise<T>, ms: number): Promise<T | typeof EXPIRED> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<typeof EXPIRED>((resolve) => {
    timer = setTimeout(() => resolve(EXPIRED), ms);
  });
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}
