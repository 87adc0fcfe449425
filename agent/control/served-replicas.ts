/**
 * The replicas of one served volume, as its writer handles them: one page
 * blob per replica the control plane lists (each with its own replaceable
 * SAS), the engine's replica layer over them (agent/engine/replicas.ts),
 * the durable offline marks (offline-marks.ts), and what the control plane
 * asks on the same attachment: stop writing one, resync, rebuild, retire
 * (`update()`). Every volume is served this way, one replica included, so
 * that a replica added later is a rebuild on the running export.
 *
 * At open, the metadata of every replica the control plane has ONLINE is
 * read: one that another replica names in `pagediskoffline` missed writes
 * and is opened OFFLINE, whatever the registry says, and so is one that
 * cannot be reached (it is marked on the others before the first write).
 * A replica the control plane has OFFLINE or RESYNCING is opened OFFLINE;
 * one REBUILDING is added by a rebuild once serving, and one RESYNCING that
 * could not be opened (no SAS then) by a full resync once it has one.
 *
 * Concurrency: `update()` only starts copies and offline transitions; each
 * copy runs on its own and at most one per replica. Reports read the
 * engine's view each time.
 */
import type {
  DesiredAttachment,
  DesiredReplica,
  ReplicaReport,
  ReportedEvent,
} from "../../contract/node.ts";
import { markedOffline, REPLICA_KEY, VOLUME_KEY } from "../../contract/replica-metadata.ts";
import { WRITER_LOST } from "../../contract/signals.ts";
import type { VolumeFailedEvent } from "../engine/failure.ts";
import { PageBlobBackend } from "../engine/pageblob-backend.ts";
import {
  type MemberStatus,
  openReplicatedVolume,
  type ReplicaFailure,
  type ReplicaMember,
  type ReplicatedVolume,
} from "../engine/replicas.ts";
import type { Logger } from "../log.ts";
import { StorageError } from "../pageblob/errors.ts";
import { type BlobLocation, parseBlobUrl } from "../pageblob/location.ts";
import { type BlobMetadata, type BlobProperties, PageBlob } from "../pageblob/page-blob.ts";
import { ReplaceableSas } from "../pageblob/sas.ts";
import { doubtKey, inheritedDoubtMs, sharedInDoubt } from "../pageblob/in-doubt.ts";
import { BlobTransport, DEFAULT_DOUBT_MS } from "../pageblob/transport.ts";
import { serveVolume, type VolumeExport } from "../serve/export.ts";
import type { ReplicaStatus } from "../status/source.ts";
import { OfflineMarks } from "./offline-marks.ts";
import { dropWritingMark, takeWritingMark } from "./writing-mark.ts";

/** Longest `error` a replica report carries (contract/node.ts ReplicaReport). */
const MAX_ERROR_CHARS = 160;
const NO_SAS = "the pool cannot sign a SAS for this replica";
/** Said of an OFFLINE replica whose missed writes nothing here recorded. */
export const NO_DIRTY_LOG = "no dirty-region log on this node: a full copy is needed";

export interface ServedReplicasOptions {
  node: string;
  /** The export's unix socket. */
  socket: string;
  /** Dirty-region logs of this volume. */
  dirtyDir: string;
  dirtyGranularity?: number;
  log: Logger;
  report(event: ReportedEvent): void;
  /** The engine failed the whole volume. */
  onFailed(event: VolumeFailedEvent): void;
}

/**
 * Every reachable replica the control plane has ONLINE is marked offline
 * by another: none is safe to read. Not retried: the volume is refused.
 */
export class NoUsableReplica extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NoUsableReplica";
  }
}

/**
 * One replica blob this writer can reach. `blob` is this file's own client
 * (probe, offline marks); each device handed to the engine gets a client of
 * its own over the same SAS, which the engine closes with the device.
 */
interface Member {
  id: string;
  pool: string;
  location: BlobLocation;
  sas: ReplaceableSas;
  blob: PageBlob;
}

export class ServedReplicas {
  readonly export: VolumeExport;
  readonly #volume: ReplicatedVolume;
  readonly #members: Map<string, Member>;
  readonly #marks: OfflineMarks;
  readonly #size: number;
  readonly #o: ServedReplicasOptions;
  readonly #leaseId: string;
  #want: DesiredAttachment;
  /** Why a replica is OFFLINE, by id, as far as the engine does not say. */
  readonly #errors = new Map<string, string>();
  /** OFFLINE because this node's last writer here stopped uncleanly (ReplicaReport.stale), until copied. */
  readonly #stale = new Set<string>();
  readonly #copies = new Map<string, Promise<void>>();
  readonly #removed = new Set<string>();
  /** Replicas the control plane wants OFFLINE that the engine would not stop writing (the last ONLINE). */
  readonly #refusedOffline = new Set<string>();

  private constructor(init: {
    exported: VolumeExport;
    volume: ReplicatedVolume;
    members: Map<string, Member>;
    marks: OfflineMarks;
    size: number;
    want: DesiredAttachment;
    errors: Map<string, string>;
    stale: readonly string[];
    opts: ServedReplicasOptions;
  }) {
    this.export = init.exported;
    this.#volume = init.volume;
    this.#members = init.members;
    this.#marks = init.marks;
    this.#size = init.size;
    this.#want = init.want;
    this.#leaseId = init.want.leaseId;
    this.#o = init.opts;
    for (const [id, message] of init.errors) this.#errors.set(id, message);
    for (const id of init.stale) this.#stale.add(id);
  }

  /**
   * Open every replica of `want` and serve the volume. Rejects with a fatal
   * StorageError (the volume is refused) when a replica refuses the lease,
   * every ONLINE one is gone, or none is safe to read; with another error
   * (retried by the next pass) when none could be reached.
   */
  static async open(want: DesiredAttachment, opts: ServedReplicasOptions): Promise<ServedReplicas> {
    const { log } = opts;
    const members = new Map<string, Member>();
    for (const r of want.replicas) {
      if (r.url !== null) members.set(r.id, member(r));
    }
    const closeAll = () => Promise.all([...members.values()].map((m) => m.blob.close().catch(() => {})));
    let writing = false;
    try {
      const probed = await probe(want, members);
      const lost = probed.failed.find((f) => f.err instanceof StorageError && f.err.code === "LeaseLost");
      if (lost) throw lost.err;
      if (probed.ok.length === 0) throw probed.failed[0]?.err ?? new Error(`volume ${want.volume}: no replica reachable`);
      const size = probed.ok[0]!.props.size;
      if (size !== want.sizeBytes) {
        // The blob is the truth: a resize may not have reached the registry yet.
        log.warn({ blobSize: size, sizeBytes: want.sizeBytes }, "blob size differs");
      }

      const marked = new Set(probed.ok.flatMap((p) => markedOffline(p.props.metadata)));
      const online = probed.ok.map((p) => p.id).filter((id) => !marked.has(id));
      if (online.length === 0) {
        throw new NoUsableReplica(
          `every reachable online replica of volume ${want.volume} is marked as missing writes (${[...marked].join(", ")})`,
        );
      }
      const marks = new OfflineMarks({ epoch: want.epoch, leaseId: want.leaseId, marked, log });
      for (const m of members.values()) {
        const props = probed.ok.find((p) => p.id === m.id)?.props;
        marks.add(m.id, { blob: m.blob, metadata: props?.metadata ?? baseMetadata(want.volume, m.id) });
      }

      // An ONLINE replica that could not be reached misses every write from now on:
      // marked on the others before the volume takes its first write.
      const errors = new Map<string, string>();
      for (const { id, err } of probed.failed) {
        const replica = want.replicas.find((r) => r.id === id)!;
        const e = err instanceof StorageError ? err : undefined;
        errors.set(id, oneLine(`not reachable at open: ${(err as Error).message}`));
        reportFailure(want, opts, {
          replica: id,
          pool: replica.pool,
          message: (err as Error).message,
          code: e?.code ?? "Transient",
          status: e?.status ?? 0,
          ...(e?.azureCode ? { azureCode: e.azureCode } : {}),
        });
        if (!marked.has(id)) await marks.offline(id, online);
      }

      // This node stopped while writing at this epoch (a crash, a kill): writes in flight may
      // have reached some replicas only. The first stays; the others are copied from it in full.
      const unclean = await takeWritingMark(opts.dirtyDir, want.epoch);
      writing = true;
      const unsynced = unclean ? online.slice(1) : [];
      for (const id of unsynced) {
        errors.set(id, `${WRITER_LOST}: this node stopped while writing; resynced in full from ${online[0]}`);
        await marks.offline(id, [online[0]!]);
      }
      if (unsynced.length > 0) log.warn({ kept: online[0], unsynced }, "the last writer here stopped uncleanly");
      // It wrote under the lease this run holds, so a Put Page it had sent may still land: no page
      // write goes out until it no longer can (pageblob/in-doubt.ts). Reads and metadata go on.
      const inherited = unclean ? inheritedDoubtMs(DEFAULT_DOUBT_MS) : 0;
      if (inherited > 0) {
        for (const m of members.values()) {
          sharedInDoubt.abandon(doubtKey(m.location), { kind: "pages", start: 0, end: size }, inherited);
        }
        log.warn({ waitMs: Math.round(inherited) }, "page writes wait for what the last writer here may still have in flight");
      }

      const listedOffline = want.replicas.filter((r) => r.state !== "ONLINE").map((r) => r.id);
      const offline = new Set([...listedOffline, ...marked, ...probed.failed.map((f) => f.id), ...unsynced]);
      // REBUILDING ones join by a rebuild once serving (update()).
      const engaged = want.replicas.filter((r) => r.state !== "REBUILDING" && members.has(r.id));
      // Failures while the engine opens (loading its map) are told once the set exists.
      const early: ReplicaFailure[] = [];
      let onFailure = (failure: ReplicaFailure): void => {
        early.push(failure);
      };
      const volume = await openReplicatedVolume(
        engaged.map((r) => device(members.get(r.id)!, size, want.leaseId)),
        {
          onFailed: opts.onFailed,
          onEvent: (event) => log.warn(event, "storage throttling"),
          offline: engaged.filter((r) => offline.has(r.id)).map((r) => r.id),
          dirtyLog: {
            dir: opts.dirtyDir,
            epoch: want.epoch,
            ...(opts.dirtyGranularity !== undefined ? { granularity: opts.dirtyGranularity } : {}),
          },
          markOffline: (replica, stillOnline) => marks.offline(replica, stillOnline),
          markOnline: (replica, nowOnline) => marks.online(replica, nowOnline),
          onFailure: (failure) => onFailure(failure),
          // A copy's checkpoint holds only if its target took every write: not after an unclean stop.
          resumeCopies: !unclean,
        },
      );
      const exported = await serveVolume(volume, {
        name: want.volume,
        description: `${engaged.length} replica(s) of ${want.volume} epoch ${want.epoch}`,
        listen: { unix: opts.socket },
        log,
      }).catch(async (err: unknown) => {
        await volume.close().catch(() => {});
        throw err;
      });
      const set = new ServedReplicas({ exported, volume, members, marks, size, want, errors, stale: unsynced, opts });
      onFailure = (failure) => set.#onFailure(failure);
      for (const f of early) set.#onFailure(f);
      return set;
    } catch (err) {
      await closeAll();
      // Nothing was written: the mark would only cost the next open a needless full copy.
      if (writing) await dropWritingMark(opts.dirtyDir, want.epoch).catch(() => {});
      throw err;
    }
  }

  /**
   * The control plane's latest word on this attachment: fresh SAS tokens,
   * replicas to stop writing (OFFLINE while written here), copies to start
   * (RESYNCING, REBUILDING), replicas to stop using (no longer listed:
   * retired). A copy that failed is tried again by the next update that
   * still asks for it.
   */
  update(want: DesiredAttachment): void {
    this.#want = want;
    const statuses = this.#statuses();
    for (const r of want.replicas) {
      let m = this.#members.get(r.id);
      if (m && r.url) {
        const sas = new URL(r.url).search;
        if (sas.length > 1) m.sas.replace(sas);
      }
      if (r.state === "OFFLINE") {
        const status = statuses.get(r.id);
        if (status && (status.state !== "OFFLINE" || (r.stale && status.dirtyBytes !== undefined))) this.#takeOffline(r);
        continue;
      }
      if (r.state !== "RESYNCING" && r.state !== "REBUILDING") continue;
      if (this.#copies.has(r.id) || this.#removed.has(r.id)) continue;
      const status = statuses.get(r.id);
      if (status && status.state !== "OFFLINE") continue;
      if (!m) {
        if (r.url === null) continue;
        m = member(r);
        this.#members.set(r.id, m);
        this.#marks.add(r.id, { blob: m.blob, metadata: baseMetadata(want.volume, r.id) });
      }
      // Not opened at attach (its pool could not sign then): the engine adds it with a full resync.
      this.#copy(r, m, !status);
    }
    const listed = new Set(want.replicas.map((r) => r.id));
    for (const id of statuses.keys()) {
      if (!listed.has(id) && !this.#removed.has(id)) this.#remove(id);
    }
  }

  /** Every replica of the latest desired state, as the writer uses it now, with its pool. */
  reports(): ReplicaStatus[] {
    const statuses = this.#statuses();
    return this.#want.replicas.map((r): ReplicaStatus => {
      const s = statuses.get(r.id);
      if (s) return { ...report(s, this.#errors.get(r.id), this.#stale.has(r.id)), pool: r.pool };
      if (this.#copies.has(r.id)) {
        return { id: r.id, pool: r.pool, state: r.state === "REBUILDING" ? "REBUILDING" : "RESYNCING", progress: 0 };
      }
      const error = r.url === null ? NO_SAS : this.#errors.get(r.id);
      return {
        id: r.id,
        pool: r.pool,
        state: "OFFLINE",
        ...(error ? { error: oneLine(error) } : {}),
        ...(this.#stale.has(r.id) ? { stale: true as const } : {}),
      };
    });
  }

  /** Whether a write that failed the volume reached some replicas only: they may differ. */
  diverged(): boolean {
    return this.#volume.diverged;
  }

  /** Whether a replica the control plane lists is not ONLINE here. */
  degraded(): boolean {
    return this.reports().some((r) => r.state !== "ONLINE");
  }

  /**
   * After the export was drained or failed (which closed the engine and its
   * devices): release our own clients. `clean` when everything acknowledged
   * was flushed: the writing mark goes.
   */
  async close(clean = true): Promise<void> {
    await Promise.all([...this.#members.values()].map((m) => m.blob.close().catch(() => {})));
    if (clean) await dropWritingMark(this.#o.dirtyDir, this.#want.epoch);
  }

  #statuses(): Map<string, MemberStatus> {
    return new Map(this.#volume.replicas().map((s) => [s.id, s]));
  }

  /**
   * Resync `r` (OFFLINE in the engine, or `added` to it: a full copy onto
   * `m`'s old blob) or rebuild it (a new blob: a full copy onto `m`).
   */
  #copy(r: DesiredReplica, m: Member, added: boolean): void {
    const log = this.#o.log.child({ replica: r.id, pool: r.pool });
    const kind = r.state === "REBUILDING" ? "rebuild" : "resync";
    log.info({ kind, ...(kind === "resync" ? { full: added } : {}) }, "replica copy started");
    const started =
      kind === "rebuild"
        ? this.#volume.rebuild(device(m, this.#size, this.#leaseId))
        : this.#volume.resync(added ? device(m, this.#size, this.#leaseId) : r.id);
    const run = started.then(
      () => {
        this.#errors.delete(r.id);
        this.#stale.delete(r.id);
        log.info({ kind }, "replica online");
      },
      (err: unknown) => {
        this.#errors.set(r.id, oneLine(`${kind} failed: ${(err as Error).message}`));
        log.warn({ kind, err }, "replica copy failed");
      },
    );
    this.#copies.set(
      r.id,
      run.finally(() => this.#copies.delete(r.id)),
    );
  }

  /**
   * The control plane put `r` OFFLINE while it is written here: the engine
   * stops writing it and tracks what it misses (no failure to report: the
   * control plane knows). Refused for the last ONLINE one, which keeps
   * serving: said once in the log.
   */
  #takeOffline(r: DesiredReplica): void {
    const log = this.#o.log.child({ replica: r.id, pool: r.pool });
    this.#volume.takeOffline(r.id, r.stale ? { distrust: true } : {}).then(
      () => log.info("replica taken offline as the control plane asks"),
      (err: unknown) => {
        if (this.#refusedOffline.has(r.id)) return;
        this.#refusedOffline.add(r.id);
        log.warn({ err }, "replica could not be taken offline");
      },
    );
  }

  /** `id` is no longer listed (retired): the engine stops using it; its marks go. */
  #remove(id: string): void {
    this.#removed.add(id);
    const log = this.#o.log.child({ replica: id });
    this.#volume
      .remove(id)
      .then(async () => {
        this.#errors.delete(id);
        this.#stale.delete(id);
        const online = this.#volume.replicas().flatMap((m) => (m.state === "ONLINE" ? [m.id] : []));
        // A stale mark only costs a full copy of a replica that no longer exists: never fatal.
        await this.#marks.forget(id, online).catch((err: unknown) => log.warn({ err }, "offline mark of a removed replica left"));
        log.info("replica removed");
      })
      .catch((err: unknown) => log.warn({ err }, "replica could not be removed"));
  }

  #onFailure(f: ReplicaFailure): void {
    this.#errors.set(f.replica, oneLine(f.message));
    reportFailure(this.#want, this.#o, f);
  }
}

/** A page blob client for `r` through its own SAS, replaced in place on refresh. */
function member(r: DesiredReplica): Member {
  const location = parseBlobUrl(r.url!);
  const sas = new ReplaceableSas(location.sas ?? "");
  return { id: r.id, pool: r.pool, location, sas, blob: new PageBlob(new BlobTransport(location, sas)) };
}

/** A device over `m`'s blob for the engine, with a client of its own (same SAS), closed with it. */
function device(m: Member, size: number, leaseId: string): ReplicaMember {
  const blob = new PageBlob(new BlobTransport(m.location, m.sas));
  return { id: m.id, pool: m.pool, device: new PageBlobBackend(blob, size, { leaseId }) };
}

/** What functions/storage/replica-blobs.ts writes at creation. */
function baseMetadata(volume: string, replica: string): BlobMetadata {
  return { [VOLUME_KEY]: volume, [REPLICA_KEY]: replica };
}

interface Probed {
  ok: Array<{ id: string; props: BlobProperties }>;
  failed: Array<{ id: string; err: unknown }>;
}

/** Get Blob Properties (with metadata) of every replica the control plane has ONLINE. */
async function probe(want: DesiredAttachment, members: Map<string, Member>): Promise<Probed> {
  const online = want.replicas.filter((r) => r.state === "ONLINE" && members.has(r.id));
  const results = await Promise.allSettled(online.map((r) => members.get(r.id)!.blob.properties()));
  const out: Probed = { ok: [], failed: [] };
  results.forEach((res, i) => {
    const id = online[i]!.id;
    if (res.status === "fulfilled") out.ok.push({ id, props: res.value });
    else out.failed.push({ id, err: res.reason });
  });
  return out;
}

/** A replica taken OFFLINE: one log line and a `storage-failure` event naming its pool. */
function reportFailure(want: DesiredAttachment, opts: ServedReplicasOptions, f: ReplicaFailure): void {
  opts.log.warn(
    { replica: f.replica, pool: f.pool, code: f.code, status: f.status, azureCode: f.azureCode, reason: f.message },
    "replica offline",
  );
  opts.report({
    type: "storage-failure",
    volume: want.volume,
    pool: f.pool,
    message: `replica ${f.replica} of volume ${want.volume} on pool ${f.pool} taken offline on node ${opts.node}: ${f.message}`.slice(
      0,
      1024,
    ),
    data: {
      epoch: want.epoch,
      replica: f.replica,
      code: f.code,
      status: f.status,
      ...(f.azureCode ? { azureCode: f.azureCode } : {}),
    },
  });
}

/**
 * A member as reported. An OFFLINE one without dirty bytes has no log of
 * what it missed: "0 dirty bytes" would read as "nothing to copy", so the
 * error says a full copy is needed instead (first, so the cut keeps it).
 */
function report(s: MemberStatus, fallbackError: string | undefined, stale: boolean): ReplicaReport {
  const copying = s.state === "RESYNCING" || s.state === "REBUILDING";
  let error = s.state === "OFFLINE" ? (s.error ?? fallbackError) : undefined;
  // Its cause first (the control plane acts on some, a lost writer's above all), then the consequence.
  if (s.state === "OFFLINE" && s.dirtyBytes === undefined) {
    error = error ? `${error}; ${NO_DIRTY_LOG}` : NO_DIRTY_LOG;
  }
  return {
    id: s.id,
    state: s.state,
    ...(copying && s.progress !== undefined ? { progress: Math.min(100, Math.max(0, s.progress)) } : {}),
    ...(copying && s.copiedBytes !== undefined ? { copiedBytes: s.copiedBytes } : {}),
    ...(copying && s.totalBytes !== undefined ? { totalBytes: s.totalBytes } : {}),
    ...(s.dirtyBytes !== undefined ? { dirtyBytes: s.dirtyBytes } : {}),
    ...(error ? { error: oneLine(error) } : {}),
    ...(stale && s.state === "OFFLINE" ? { stale: true as const } : {}),
  };
}

/** One printable line of at most 160 characters, as a replica report's `error` must be. */
export function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what it removes
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
  return flat.length <= MAX_ERROR_CHARS ? flat : `${flat.slice(0, MAX_ERROR_CHARS - 1)}…`;
}
