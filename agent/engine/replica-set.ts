/**
 * The replica layer: one BlockDevice over several replicas of a volume, in
 * place of the single backend's throttle/fence/meter half (DESIGN.md
 * "Replicas", issue 5 design).
 *
 * - Mutations (write, trim, writeZeroes) and flush go to every ONLINE and
 *   catching-up (RESYNCING, REBUILDING) member. A member whose request fails
 *   with a ReplicaFault (blob gone, forbidden, past its retry deadline) goes
 *   OFFLINE; the request is still acknowledged, once its range is durably
 *   in that member's dirty log and the markOffline hook has resolved. When
 *   the failing member is the last ONLINE one, the volume fails instead,
 *   exactly as with one backend. LeaseLost on any member fails the volume
 *   (the shared fence does it). BlockErrors and Invalid pass up as they are.
 * - Reads, blockStatus and cache go to the first ONLINE member (the
 *   preferred one); a ReplicaFault there takes it OFFLINE and the request is
 *   retried on the next.
 * - Every mutation marks the dirty log of every tracking member that did
 *   not take it (OFFLINE ones, and one that began catching up while it was
 *   in flight). Concurrent writes share the log's flush (group commit) and
 *   one markOffline call per member going offline.
 * - takeOffline stops writing a member the control plane put OFFLINE, as a
 *   failure would (log, mark), but reports no failure.
 * - resync/rebuild bring a member back with a Copy. When it starts, the
 *   member joins the fan-out, and the copy waits for every mutation already
 *   in flight (those did not reach it; they are in its log, or in the
 *   source's allocation read after them). Then it copies window by window
 *   under range locks (copy.ts says why). When done: markOnline hook, ONLINE,
 *   dirty log removed.
 *
 * Concurrency: state changes are synchronous. Overlapping mutations arrive
 * ordered by the coalesce layer above, so this layer does not order them;
 * it only holds mutations out of a window being copied.
 */
import {
  type BlockDevice,
  BlockError,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from "../nbd/device.ts";
import {
  allocation,
  Copy,
  type CopyRange,
  type CopySource,
  DEFAULT_CHUNK_BYTES,
  intersect,
  type RangeLock,
} from "./copy.ts";
import { CopyCheckpoint } from "./copy-checkpoint.ts";
import { DEFAULT_GRANULARITY, DirtyLog, dirtyLogPath, removeStaleLogs } from "./dirty-log.ts";
import type { FailureLatch } from "./failure.ts";
import { Layer } from "./layer.ts";
import { type IoCounts, ioCounts } from "./meter.ts";
import { isReplicaFault, ReplicaError, ReplicaFault } from "./replica-errors.ts";
import { Member, type MemberState } from "./replica-member.ts";
import type {
  RetryDeadlineError,
  ThrottleLayer,
  ThrottleOptions,
  ThrottleStats,
} from "./throttle.ts";

export type { MemberState } from "./replica-member.ts";

/** A replica as the caller gives it: id, pool and its device (a PageBlobBackend, say). */
export interface ReplicaMember {
  id: string;
  pool: string;
  device: BlockDevice;
}

/** One member as the node's reports and /volumes show it. */
export interface MemberStatus {
  id: string;
  pool: string;
  state: MemberState;
  /** Percent of the copy done, while RESYNCING or REBUILDING. */
  progress?: number;
  copiedBytes?: number;
  totalBytes?: number;
  /**
   * Bytes its dirty log holds. Absent when it is OFFLINE with no log that
   * describes what it misses (opened offline, or a full copy failed): only
   * a full copy brings it back.
   */
  dirtyBytes?: number;
  /** Why it last went offline. */
  error?: string;
}

/** A member went OFFLINE: the agent reports a storage-failure event naming its pool. */
export interface ReplicaFailure {
  replica: string;
  pool: string;
  message: string;
  /** StorageError code of the cause ("Offline" when it was already stopped). */
  code: string;
  status: number;
  azureCode?: string;
}

export interface ReplicaSetOptions {
  latch: FailureLatch;
  /** Each member's throttle; `deadlineMs` is the replica deadline. */
  throttle: Partial<ThrottleOptions>;
  /** The deadline of the last ONLINE member: the volume's, as with one backend. */
  volumeDeadlineMs: number;
  offline?: string[];
  dirtyLog: { dir: string; epoch: number; granularity?: number };
  markOffline?: (replica: string, stillOnline: string[]) => Promise<void>;
  markOnline?: (replica: string, online: string[]) => Promise<void>;
  onFailure?: (failure: ReplicaFailure) => void;
  copyChunkBytes?: number;
  copyConcurrency?: number;
  /**
   * Whether a full copy may resume from its checkpoint (copy-checkpoint.ts):
   * false after an unclean stop, when the target may miss writes in flight.
   * Default true.
   */
  resumeCopies?: boolean;
}

/** What the copies did since open (for metrics and the bench). */
export interface ReplicationStats {
  /** Bytes read from a source and written to a target by resyncs and rebuilds. */
  copiedBytes: number;
  /** Bytes cleared on targets (source holes). */
  clearedBytes: number;
  resyncs: number;
  rebuilds: number;
}

/** A mutation in flight, for copy barriers and range locks. */
interface Mutation {
  start: number;
  end: number;
  done: Promise<unknown>;
}

interface Lock {
  start: number;
  end: number;
  released: Promise<void>;
}

const RESOLVED = Promise.resolve();
function noop(): void {}

export class ReplicaSet extends Layer implements BlockDevice {
  readonly #o: ReplicaSetOptions;
  readonly #latch: FailureLatch;
  #members: Member[];
  readonly #inflight = new Set<Mutation>();
  #locks: Lock[] = [];
  #closing: Promise<void> | undefined;
  /** Mutations since open: a copy resumes from its checkpoint only if none came before it started. */
  #mutations = 0;
  #diverged = false;
  readonly #stats: ReplicationStats = { copiedBytes: 0, clearedBytes: 0, resyncs: 0, rebuilds: 0 };
  /** Throttle stats of stacks no longer in use, so the totals only grow. */
  readonly #retired: Omit<ThrottleStats, "paused"> = {
    pauses: 0,
    pausedMs: 0,
    retries: 0,
    deadlines: 0,
  };

  /**
   * Open the set: drop logs of older epochs, find this epoch's logs (a member
   * with one missed writes before a restart: it stays OFFLINE, and its mark
   * is set again), build the ONLINE members' stacks.
   */
  static async open(members: ReplicaMember[], opts: ReplicaSetOptions): Promise<ReplicaSet> {
    if (members.length === 0) {
      throw new ReplicaError("NoOnlineReplica", "a volume needs at least one replica");
    }
    const ids = new Set<string>();
    for (const r of members) {
      if (ids.has(r.id)) {
        throw new ReplicaError("DuplicateReplica", `replica ${r.id} listed twice`, { replica: r.id });
      }
      ids.add(r.id);
    }
    const { dir, epoch } = opts.dirtyLog;
    const granularity = opts.dirtyLog.granularity ?? DEFAULT_GRANULARITY;
    await removeStaleLogs(dir, epoch);
    const offline = new Set(opts.offline ?? []);
    const list: Member[] = [];
    const found: Member[] = [];
    try {
      for (const r of members) {
        const log = await DirtyLog.find(dirtyLogPath(dir, r.id, epoch), r.device.size, granularity);
        const state = log || offline.has(r.id) ? "OFFLINE" : "ONLINE";
        const m = new Member(r.id, r.pool, r.device, state);
        if (log) {
          m.tracking = true;
          m.log = Promise.resolve(log);
          m.openLog = log;
          if (!offline.has(r.id)) found.push(m);
        }
        list.push(m);
      }
      if (!list.some((m) => m.state === "ONLINE")) {
        throw new ReplicaError("NoOnlineReplica", "no replica is ONLINE to serve the volume");
      }
    } catch (err) {
      await Promise.allSettled(list.map((m) => m.openLog?.close()));
      throw err;
    }
    const set = new ReplicaSet(list, opts);
    // A log nobody told us about: we crashed between marking it and acknowledging. Mark it again.
    try {
      for (const m of found) await set.#offlineMark(m);
    } catch (err) {
      await set.close().catch(noop);
      throw err;
    }
    return set;
  }

  /** @internal use ReplicaSet.open() */
  constructor(members: Member[], opts: ReplicaSetOptions) {
    const first = members.find((m) => m.state === "ONLINE") ?? members[0]!;
    super(first.device);
    for (const m of members) {
      if (m.device.size !== this.size) {
        const message = `replica ${m.id} is ${m.device.size} bytes, the volume ${this.size}`;
        throw new ReplicaError("SizeMismatch", message, { replica: m.id });
      }
    }
    this.#o = opts;
    this.#latch = opts.latch;
    this.#members = members;
    for (const m of members) if (m.state === "ONLINE") this.#build(m);
  }

  /** Members in preference order. */
  replicas(): MemberStatus[] {
    return this.#members.map((m) => {
      const s: MemberStatus = { id: m.id, pool: m.pool, state: m.state };
      if (m.tracking || m.state !== "OFFLINE") s.dirtyBytes = m.openLog?.dirtyBytes ?? 0;
      if (m.progress) {
        s.copiedBytes = m.progress.copiedBytes;
        s.totalBytes = m.progress.totalBytes;
        // Until the plan exists (in-flight writes settling, the allocation being read) it is 0.
        s.progress = m.progress instanceof Copy ? Math.min(100, m.progress.percent) : 0;
      }
      if (m.error !== undefined) s.error = m.error;
      return s;
    });
  }

  /**
   * A mutation reached some members and failed on another with an error
   * that fails the volume (a lost lease: the control plane took the volume
   * away mid-write). Nothing records where, so the members may differ.
   */
  get diverged(): boolean {
    return this.#diverged;
  }

  get stats(): ReplicationStats {
    return { ...this.#stats };
  }

  /** Requests that reached each member's device, summed. */
  backendCounts(): IoCounts {
    const sum = ioCounts();
    for (const m of this.#members) {
      for (const k of Object.keys(sum) as Array<keyof IoCounts>) sum[k] += m.io[k];
    }
    return sum;
  }

  /** Throttle stats summed over the members' stacks. */
  throttleStats(): ThrottleStats {
    const sum: ThrottleStats = { ...this.#retired, paused: false };
    for (const m of this.#members) {
      const s = m.stack?.stats;
      if (!s) continue;
      sum.pauses += s.pauses;
      sum.pausedMs += s.pausedMs;
      sum.retries += s.retries;
      sum.deadlines += s.deadlines;
      sum.paused ||= s.paused;
    }
    return sum;
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.#preferred((d) => d.read(offset, length, into));
  }

  write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
    return this.#mutate(offset, offset + data.length, (d) => d.write(offset, data, opts));
  }

  trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    return this.#mutate(offset, offset + length, (d) => d.trim(offset, length, opts));
  }

  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    return this.#mutate(offset, offset + length, (d) => d.writeZeroes(offset, length, opts));
  }

  async flush(): Promise<void> {
    if (this.#members.length === 1) await this.#alone((d) => d.flush());
    else await this.#fanOut(0, 0, (d) => d.flush(), false);
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#preferred((d) => d.blockStatus(offset, length));
  }

  cache(offset: number, length: number): Promise<void> {
    return this.#preferred((d) => d.cache(offset, length));
  }

  /**
   * Bring an OFFLINE member back: a dirty copy when its log describes what it
   * missed, else a full one (holes cleared). Given a ReplicaMember, its
   * device replaces the member's (the old one is closed), or, for a replica
   * this set never had (one not opened at attach), it joins as a new member
   * with a full copy: unlike a rebuild's new blob, an old blob may hold
   * stale data where the source has holes. Resolves once ONLINE; idempotent
   * per id.
   */
  resync(replica: string | ReplicaMember): Promise<void> {
    const id = typeof replica === "string" ? replica : replica.id;
    const device = typeof replica === "string" ? undefined : replica.device;
    if (device) {
      const sized = this.#checkSize(id, device);
      if (sized) return sized;
    }
    let m = this.#members.find((x) => x.id === id);
    if (!m) {
      if (typeof replica === "string") {
        return Promise.reject(new ReplicaError("UnknownReplica", `no replica ${id}`, { replica: id }));
      }
      // Not tracking: nothing recorded what it missed.
      m = new Member(id, replica.pool, replica.device, "OFFLINE");
      this.#members.push(m);
    }
    if (m.state === "ONLINE") return RESOLVED;
    if (m.copying) return m.copying;
    if (device && device !== m.device) this.#replaceDevice(m, device);
    return this.#catchUp(m, "RESYNCING");
  }

  /**
   * Stop writing a member the control plane has put OFFLINE (not a failure
   * seen here): from ONLINE it starts its dirty log and is marked offline on
   * the survivors, as when a failure takes it offline, but no failure is
   * reported; a copy onto it stops. Resolves once the mark is written.
   * Never the last ONLINE one; a no-op for one already OFFLINE. With
   * `distrust` (its content is not trusted: a lost writer's last writes may
   * be missing) it keeps no dirty log, so only a full copy brings it back.
   */
  takeOffline(id: string, opts: { distrust?: boolean } = {}): Promise<void> {
    const m = this.#members.find((x) => x.id === id);
    if (!m) {
      return Promise.reject(new ReplicaError("UnknownReplica", `no replica ${id}`, { replica: id }));
    }
    if (m.state === "OFFLINE") return opts.distrust ? this.#distrust(m) : RESOLVED;
    if (m.state === "ONLINE" && this.#online() === 1) {
      const message = `replica ${id} is the last ONLINE one`;
      return Promise.reject(new ReplicaError("LastOnlineReplica", message, { replica: id }));
    }
    this.#takeOffline(m, "taken offline by the control plane");
    const distrusted = opts.distrust ? this.#distrust(m) : RESOLVED;
    // The mark may have failed meanwhile; the next write asks again anyway.
    return Promise.all([this.#offlineMark(m), distrusted]).then(noop);
  }

  /**
   * `m`'s content is not trusted beyond what its log says: no log, so only
   * a full copy brings it back. Resolves once the log is gone from disk too,
   * or a restart would resync it from the log alone.
   */
  async #distrust(m: Member): Promise<void> {
    if (!m.tracking && !m.log) return;
    m.tracking = false;
    const log = m.log;
    m.log = undefined;
    m.openLog = undefined;
    await log?.then((l) => l.remove()).catch(noop);
  }

  /** Add a member on a new blob (or restart one) and copy every allocated range onto it. */
  rebuild(member: ReplicaMember): Promise<void> {
    const sized = this.#checkSize(member.id, member.device);
    if (sized) return sized;
    let m = this.#members.find((x) => x.id === member.id);
    if (m?.state === "ONLINE") return RESOLVED;
    if (m?.copying) return m.copying;
    if (!m) {
      m = new Member(member.id, member.pool, member.device, "OFFLINE");
      this.#members.push(m);
    } else if (member.device !== m.device) {
      this.#replaceDevice(m, member.device);
    }
    // A rebuild copies everything; what the old log says is moot.
    m.tracking = false;
    return this.#catchUp(m, "REBUILDING");
  }

  /** Stop using a member and delete its log; never the last ONLINE one. Unknown ids are a no-op. */
  async remove(id: string): Promise<void> {
    const m = this.#members.find((x) => x.id === id);
    if (!m) return;
    if (m.state === "ONLINE" && this.#online() === 1) {
      const message = `replica ${id} is the last ONLINE one`;
      throw new ReplicaError("LastOnlineReplica", message, { replica: id });
    }
    m.removed = true;
    this.#members = this.#members.filter((x) => x !== m);
    m.state = "OFFLINE";
    m.abort("removed");
    await m.copying?.catch(noop);
    this.#retire(m);
    await (m.stack ?? m.device).close().catch(noop);
    const log = m.log;
    m.log = undefined;
    m.openLog = undefined;
    if (log) await (await log.catch(() => undefined))?.remove();
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    for (const m of this.#members) m.abort("closed");
    await Promise.allSettled(this.#members.map((m) => m.copying));
    // Logs stay on disk: a restart resumes from them.
    await Promise.allSettled(this.#members.map(async (m) => (await m.log)?.close()));
    const results = await Promise.allSettled(
      this.#members.map((m) => (m.stack ?? m.device).close()),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed && !this.#latch.failed) throw failed.reason;
  }

  // --- the data path ---

  #online(): number {
    let n = 0;
    for (const m of this.#members) if (m.state === "ONLINE") n++;
    return n;
  }

  /** Run `call` on the preferred ONLINE member, failing over on a ReplicaFault. */
  async #preferred<T>(call: (d: BlockDevice) => Promise<T>): Promise<T> {
    for (;;) {
      const m = this.#members.find((x) => x.state === "ONLINE");
      if (!m?.stack) throw new BlockError("EIO", "no ONLINE replica");
      const generation = m.generation;
      try {
        return await call(m.stack);
      } catch (err) {
        if (!isReplicaFault(err)) throw err;
        this.#fault(m, generation, err);
      }
    }
  }

  #mutate(start: number, end: number, run: (d: BlockDevice) => Promise<void>): Promise<void> {
    this.#mutations++;
    if (this.#locks.length > 0 && this.#lockOver(start, end)) {
      return this.#afterLocks(start, end, run);
    }
    return this.#begin(start, end, run);
  }

  async #afterLocks(
    start: number,
    end: number,
    run: (d: BlockDevice) => Promise<void>,
  ): Promise<void> {
    for (let l = this.#lockOver(start, end); l; l = this.#lockOver(start, end)) await l.released;
    return this.#begin(start, end, run);
  }

  #begin(start: number, end: number, run: (d: BlockDevice) => Promise<void>): Promise<void> {
    const done = this.#members.length === 1 ? this.#alone(run) : this.#fanOut(start, end, run, true);
    const op: Mutation = { start, end, done };
    this.#inflight.add(op);
    const forget = (): void => {
      this.#inflight.delete(op);
    };
    done.then(forget, forget);
    return done;
  }

  /**
   * `#fanOut` for a volume of one member (the common case): always ONLINE
   * (the last one never goes offline) and so never tracking, so there is
   * nothing to gather or mark; one call, one rejection handler.
   */
  #alone(run: (d: BlockDevice) => Promise<void>): Promise<void> {
    const m = this.#members[0]!;
    if (!m.stack) return Promise.reject(new BlockError("EIO", "no ONLINE replica"));
    const generation = m.generation;
    return run(m.stack).then(undefined, (err: unknown) => {
      // A fault of the last ONLINE member fails the volume: #fault throws its cause.
      if (isReplicaFault(err)) this.#fault(m, generation, err);
      throw err;
    });
  }

  /**
   * Send to every written member; take the faulty ones offline; then, for a
   * mutation, make its range durable in the logs of the tracking members
   * that did not take it.
   */
  async #fanOut(
    start: number,
    end: number,
    run: (d: BlockDevice) => Promise<void>,
    mutation: boolean,
  ): Promise<void> {
    const targets: Member[] = [];
    const generations: number[] = [];
    const calls: Array<Promise<void>> = [];
    for (const m of this.#members) {
      if (!m.written || !m.stack) continue;
      targets.push(m);
      generations.push(m.generation);
      calls.push(run(m.stack));
    }
    const results = await Promise.allSettled(calls);
    let error: unknown;
    let took: Set<Member> | undefined;
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      const m = targets[i]!;
      // A stack replaced meanwhile (offline, then resyncing): its outcome no longer counts.
      const current = !m.removed && m.generation === generations[i];
      if (r.status === "fulfilled") {
        if (current) (took ??= new Set()).add(m);
      } else if (isReplicaFault(r.reason)) {
        this.#fault(m, generations[i]!, r.reason);
      } else if (current) {
        error ??= r.reason;
      }
    }
    if (error !== undefined) {
      if (mutation && took !== undefined && took.size > 0) this.#diverged = true;
      throw error;
    }
    // Nothing is acknowledged that no ONLINE replica holds: when every target's outcome was
    // set aside (the volume closing, a stack replaced meanwhile), the request failed.
    if (![...(took ?? [])].some((m) => m.state === "ONLINE")) {
      throw new BlockError("EIO", "no ONLINE replica took the request");
    }
    if (!mutation) return;
    let marks: Array<Promise<void>> | undefined;
    for (const m of this.#members) {
      if (m.tracking && !took?.has(m)) (marks ??= []).push(this.#markDirty(m, start, end));
    }
    if (marks) await Promise.all(marks);
  }

  /** A ReplicaFault from `m`'s stack `generation`: offline, or fail the volume if it was the last. */
  #fault(m: Member, generation: number, err: ReplicaFault | RetryDeadlineError): void {
    if (m.removed || m.generation !== generation || m.state === "OFFLINE") return;
    if (this.#closing || this.#latch.failed) return;
    if (m.state === "ONLINE" && this.#online() === 1) {
      const cause = err instanceof ReplicaFault ? err.volumeCause : err;
      this.#latch.trip(cause);
      throw cause;
    }
    this.#failed(m, err);
  }

  /** `m` stops being written; its log and its offline mark start. */
  #takeOffline(m: Member, message: string): void {
    const wasOnline = m.state === "ONLINE";
    m.state = "OFFLINE";
    m.abort("taken offline");
    // From ONLINE it missed nothing yet: the log now describes all it misses.
    // A full copy that failed leaves unknown gaps: not tracking, a full copy again.
    if (wasOnline) m.tracking = true;
    if (m.tracking) m.log ??= this.#openLog(m);
    m.log?.catch(noop);
    m.error = message;
    m.marked = undefined;
    this.#offlineMark(m).catch(noop);
  }

  /** `m` failed (`err`): offline, and the failure told. */
  #failed(m: Member, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.#takeOffline(m, message);
    const fault = err instanceof ReplicaFault ? err : undefined;
    const failure: ReplicaFailure = {
      replica: m.id,
      pool: m.pool,
      message,
      code: fault?.code ?? (err as { code?: string }).code ?? "Offline",
      status: fault?.status ?? 0,
    };
    if (fault?.azureCode !== undefined) failure.azureCode = fault.azureCode;
    try {
      this.#o.onFailure?.(failure);
    } catch {
      // The caller's reporting must not break the data path.
    }
  }

  async #markDirty(m: Member, start: number, end: number): Promise<void> {
    m.log ??= this.#openLog(m);
    const mark = m.log.then((log) => log.mark(start, end - start));
    await Promise.all([mark, this.#offlineMark(m)]);
  }

  #openLog(m: Member): Promise<DirtyLog> {
    const { dir, epoch, granularity } = this.#o.dirtyLog;
    const path = dirtyLogPath(dir, m.id, epoch);
    const opening = DirtyLog.open(path, this.size, granularity ?? DEFAULT_GRANULARITY).then(
      (log) => {
        m.openLog = log;
        return log;
      },
      (err: unknown) => {
        // The next write tries again; this one fails, unacknowledged.
        if (m.log === opening) m.log = undefined;
        throw err;
      },
    );
    return opening;
  }

  /** The markOffline hook for `m`, called once per offline period and again after a failure. */
  #offlineMark(m: Member): Promise<void> {
    const hook = this.#o.markOffline;
    if (!hook) return RESOLVED;
    if (m.marked) return m.marked;
    const online = this.#members.filter((x) => x.state === "ONLINE").map((x) => x.id);
    const marked = hook(m.id, online).then(undefined, (err: unknown) => {
      if (m.marked === marked) m.marked = undefined;
      throw err;
    });
    m.marked = marked;
    return marked;
  }

  // --- copies ---

  readonly #source: CopySource = {
    read: (offset, length) => this.#preferred((d) => d.read(offset, length)),
    blockStatus: (offset, length) => this.#preferred((d) => d.blockStatus(offset, length)),
  };

  #lockOver(start: number, end: number): Lock | undefined {
    return this.#locks.find((l) => l.start < end && start < l.end);
  }

  readonly #lock: RangeLock = async (start, end) => {
    for (let l = this.#lockOver(start, end); l; l = this.#lockOver(start, end)) await l.released;
    let release!: () => void;
    const lock: Lock = { start, end, released: new Promise((r) => (release = r)) };
    this.#locks.push(lock);
    const busy: Array<Promise<unknown>> = [];
    for (const op of this.#inflight) {
      if (op.start < end && start < op.end) busy.push(op.done.catch(noop));
    }
    await Promise.all(busy);
    return () => {
      this.#locks = this.#locks.filter((l) => l !== lock);
      release();
    };
  };

  /** A fresh stack for `m`: the replica deadline, or the volume's while `m` is the last ONLINE one. */
  #build(m: Member): ThrottleLayer {
    const replicaMs = this.#o.throttle.deadlineMs ?? this.#o.volumeDeadlineMs;
    return m.build(this.#latch, this.#o.throttle, () =>
      m.state === "ONLINE" && this.#online() === 1 ? this.#o.volumeDeadlineMs : replicaMs,
    );
  }

  #checkSize(id: string, device: BlockDevice): Promise<never> | undefined {
    if (device.size === this.size) return undefined;
    return Promise.reject(
      new ReplicaError(
        "SizeMismatch",
        `replica ${id} is ${device.size} bytes, the volume ${this.size}`,
        { replica: id },
      ),
    );
  }

  #replaceDevice(m: Member, device: BlockDevice): void {
    const old = m.stack ?? m.device;
    this.#retire(m);
    m.stack = undefined;
    m.device = device;
    old.close().catch(noop);
  }

  /** Keep a stack's throttle counts before it is dropped. */
  #retire(m: Member): void {
    const s = m.stack?.stats;
    if (!s) return;
    this.#retired.pauses += s.pauses;
    this.#retired.pausedMs += s.pausedMs;
    this.#retired.retries += s.retries;
    this.#retired.deadlines += s.deadlines;
  }

  #catchUp(m: Member, state: "RESYNCING" | "REBUILDING"): Promise<void> {
    if (this.#closing) {
      return Promise.reject(new ReplicaError("CopyFailed", "volume is closing", { replica: m.id }));
    }
    const copying = this.#copy(m, state).finally(() => {
      if (m.copying === copying) m.copying = undefined;
    });
    m.copying = copying;
    copying.catch(noop);
    return copying;
  }

  async #copy(m: Member, state: "RESYNCING" | "REBUILDING"): Promise<void> {
    const dirty = state === "RESYNCING" && m.tracking;
    // A write since open did not reach the target (it is written from here on): what the
    // checkpoint says is copied may be stale, so the copy starts over.
    const resumable = this.#o.resumeCopies !== false && this.#mutations === 0;
    this.#retire(m);
    const target = this.#build(m);
    const generation = m.generation;
    m.state = state;
    m.error = undefined;
    m.progress = { copiedBytes: 0, totalBytes: 0 };
    if (state === "RESYNCING") this.#stats.resyncs++;
    else this.#stats.rebuilds++;
    let copy: Copy | undefined;
    const { dir, epoch } = this.#o.dirtyLog;
    // Only a full copy keeps a checkpoint: a dirty log is itself the record of what is left.
    const checkpoint = dirty ? undefined : new CopyCheckpoint(dir, m.id, epoch);
    let keepCheckpoint = false;
    try {
      // Mutations in flight did not reach it: wait until they are in its log or on the source.
      await Promise.all([...this.#inflight].map((op) => op.done.catch(noop)));
      this.#stillCatchingUp(m, generation);
      let plan: { ranges: CopyRange[]; holes?: CopyRange[] };
      if (dirty) {
        m.log ??= this.#openLog(m);
        plan = { ranges: [...(await m.log).regions()] };
      } else {
        // The target may hold data where the source has none: an old replica's
        // stale bytes, or what an interrupted rebuild wrote before trims and
        // zeroes reached only the source. Those are cleared; a new blob has none.
        const [{ allocated, holes }, onTarget] = await Promise.all([
          allocation(this.#source, this.size),
          allocation(target, this.size),
        ]);
        plan = { ranges: allocated, holes: intersect(holes, onTarget.allocated) };
      }
      const resumeFrom = checkpoint && resumable ? await checkpoint.read() : 0;
      // Starting over: an old checkpoint must not outlive this run should it stop before its first window.
      if (checkpoint && resumeFrom === 0) await checkpoint.drop();
      this.#stillCatchingUp(m, generation);
      copy = new Copy({
        ...plan,
        source: this.#source,
        target,
        clearHoles: state === "RESYNCING" || (plan.holes?.length ?? 0) > 0,
        lock: this.#lock,
        chunkBytes: this.#o.copyChunkBytes ?? DEFAULT_CHUNK_BYTES,
        ...(this.#o.copyConcurrency !== undefined ? { concurrency: this.#o.copyConcurrency } : {}),
        signal: m.signal,
        ...(resumeFrom > 0 ? { skipBelow: resumeFrom } : {}),
        ...(checkpoint ? { onDoneBelow: (offset: number) => checkpoint.save(offset) } : {}),
      });
      m.progress = copy;
      await copy.run();
      this.#stillCatchingUp(m, generation);
      const online = this.#members.filter((x) => x.state === "ONLINE").map((x) => x.id);
      await this.#o.markOnline?.(m.id, [...online, m.id]);
      this.#stillCatchingUp(m, generation);
    } catch (err) {
      const current = !m.removed && m.generation === generation && m.written;
      // Stopped by the volume's close: the target took every write so far, and may resume.
      keepCheckpoint = this.#closing !== undefined && current;
      if (current && !this.#closing && !this.#latch.failed) {
        this.#failed(m, err);
      }
      const why = m.error ?? (err instanceof Error ? err.message : String(err));
      const message = `${state.toLowerCase()} of replica ${m.id} stopped: ${why}`;
      throw new ReplicaError("CopyFailed", message, { replica: m.id, cause: err });
    } finally {
      if (copy) {
        this.#stats.copiedBytes += copy.dataBytes;
        this.#stats.clearedBytes += copy.clearedBytes;
      }
      await (keepCheckpoint ? checkpoint?.flush() : checkpoint?.drop())?.catch(noop);
    }
    m.state = "ONLINE";
    m.tracking = false;
    m.progress = undefined;
    m.marked = undefined;
    const log = m.log;
    m.log = undefined;
    m.openLog = undefined;
    // A crash before this removal leaves the log: the restart then resyncs again, harmlessly.
    if (log) await (await log.catch(() => undefined))?.remove().catch(noop);
  }

  #stillCatchingUp(m: Member, generation: number): void {
    if (this.#closing) throw new ReplicaError("CopyFailed", "volume closed", { replica: m.id });
    if (m.removed || m.generation !== generation || m.state === "OFFLINE") {
      const message = `replica ${m.id} went offline: ${m.error ?? "stopped"}`;
      throw new ReplicaError("CopyFailed", message, { replica: m.id });
    }
  }
}
