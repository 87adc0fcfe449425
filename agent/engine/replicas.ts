/**
 * A replicated volume: the usual engine stack with the replica layer in
 * place of the single backend's lower half (issue 5 design, E1).
 *
 *   failure         EIO for everything once failed (the shared latch)
 *   meter (client)
 *   align
 *   sparse
 *   coalesce
 *   replica set     fan-out of mutations, preferred reads with failover,
 *                   offline transitions, dirty logs, resync and rebuild
 *   per member:     throttle (replica deadline) -> fence -> contain -> meter -> device
 *
 * The order above the replica set is the single volume's, for the same
 * reasons (volume.ts). Below it each member has its own throttle, so one
 * throttled pool pauses only its replica, with a deadline shorter than the
 * volume's so a dead pool is taken offline before clients notice; the last
 * ONLINE member retries as long as a single backend would (the volume's
 * deadline), since nothing could take over from it.
 *
 * The agent serves every volume through this, one replica included, so that
 * adding a replica is a rebuild on the running volume, never a reopen of the
 * export and the kernel device. With one member the layer costs one fan-out
 * of one call per request (bench/ measures it); `pagedisk serve`, a blob
 * outside any cluster, stays on openVolume.
 */
import { FailureLatch } from "./failure.ts";
import {
  type MemberStatus,
  type ReplicaFailure,
  type ReplicaMember,
  ReplicaSet,
  type ReplicationStats,
} from "./replica-set.ts";
import { DEFAULT_DEADLINE_MS } from "./throttle.ts";
import { loadMap, stackAbove, Volume, type VolumeMetrics, type VolumeOptions } from "./volume.ts";

export type { ReplicaThrottleEvent } from "./replica-member.ts";
export type {
  MemberState,
  MemberStatus,
  ReplicaFailure,
  ReplicaMember,
  ReplicationStats,
} from "./replica-set.ts";
export { ReplicaError, type ReplicaErrorCode } from "./replica-errors.ts";

/** A replica's retry deadline: shorter than the volume's, so a dead pool goes offline first. */
export const DEFAULT_REPLICA_DEADLINE_MS = 5_000;

export interface ReplicaOptions {
  /** Ids of members to open OFFLINE (the control plane or a metadata mark says so). */
  offline?: string[];
  /** Dirty logs: the volume's directory and bytes per bit; the epoch keys the files. */
  dirtyLog: { dir: string; epoch: number; granularity?: number };
  /** Awaited before acknowledging a write that missed `replica`: mark the survivors' metadata. */
  markOffline?: (replica: string, stillOnline: string[]) => Promise<void>;
  /** Awaited after a copy completed, before the member counts as ONLINE: clear the mark. */
  markOnline?: (replica: string, online: string[]) => Promise<void>;
  /** A member went OFFLINE (report a storage-failure event). Must not throw. */
  onFailure?: (failure: ReplicaFailure) => void;
  /**
   * Retry deadline of each member's throttle (default 5000), except the
   * last ONLINE one's: the volume's (`throttle.deadlineMs`).
   */
  replicaDeadlineMs?: number;
  /** Copy window, default 4 MiB (one Put Page). */
  copyChunkBytes?: number;
  /** Copy windows at once, default 4. */
  copyConcurrency?: number;
  /** Whether full copies resume from their checkpoints (false after an unclean stop); default true. */
  resumeCopies?: boolean;
}

export interface ReplicatedVolumeMetrics extends VolumeMetrics {
  replicas: MemberStatus[];
  replication: ReplicationStats;
}

/** The engine over several replicas; what the NBD layer serves. */
export class ReplicatedVolume extends Volume {
  readonly #set: ReplicaSet;

  /** @internal use openReplicatedVolume() */
  constructor(base: ConstructorParameters<typeof Volume>, set: ReplicaSet) {
    super(...base);
    this.#set = set;
  }

  /** Every member in preference order, with state, copy progress and dirty bytes. */
  replicas(): MemberStatus[] {
    return this.#set.replicas();
  }

  /** Whether a write that failed the volume reached some members only (ReplicaSet.diverged). */
  get diverged(): boolean {
    return this.#set.diverged;
  }

  override metrics(): ReplicatedVolumeMetrics {
    return { ...super.metrics(), replicas: this.#set.replicas(), replication: this.#set.stats };
  }

  /**
   * Bring an OFFLINE member back by copying ("dirty": its log, if it has one
   * for this epoch; else full, the source's holes cleared on it). Given a
   * ReplicaMember, its device replaces the member's, or a replica the volume
   * never had (not opened at attach) joins with a full copy. Resolves when
   * ONLINE; rejects (ReplicaError "CopyFailed") if it failed again,
   * "UnknownReplica" for an unknown id without a device. Idempotent per id.
   */
  resync(replica: string | ReplicaMember): Promise<void> {
    return this.#set.resync(replica);
  }

  /**
   * Stop writing a member the control plane put OFFLINE: its dirty log and
   * offline mark start as after a failure, without a failure report.
   * Resolves once marked; rejects "LastOnlineReplica" for the last ONLINE
   * one, "UnknownReplica" for an unknown id. A no-op when already OFFLINE.
   */
  takeOffline(id: string, opts: { distrust?: boolean } = {}): Promise<void> {
    return this.#set.takeOffline(id, opts);
  }

  /** Add a member on a new blob (REBUILDING, full copy). Resolves when ONLINE; idempotent per id. */
  rebuild(member: ReplicaMember): Promise<void> {
    return this.#set.rebuild(member);
  }

  /** Stop using a member (RETIRING or no longer listed); never the last ONLINE one. */
  remove(id: string): Promise<void> {
    return this.#set.remove(id);
  }
}

/**
 * Stack the engine over `members` (in preference order) and load the sparse
 * map from the preferred ONLINE one. Rejects with ReplicaError when no member
 * can be ONLINE, and like openVolume when the map cannot be loaded.
 */
export async function openReplicatedVolume(
  members: ReplicaMember[],
  options: VolumeOptions & ReplicaOptions,
): Promise<ReplicatedVolume> {
  const latch = new FailureLatch(options.onFailed);
  const set = await ReplicaSet.open(members, {
    latch,
    throttle: {
      ...options.throttle,
      deadlineMs: options.replicaDeadlineMs ?? DEFAULT_REPLICA_DEADLINE_MS,
      ...(options.clock ? { clock: options.clock } : {}),
      // Each member's events carry its replica and pool (ReplicaThrottleEvent).
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    },
    volumeDeadlineMs: options.throttle?.deadlineMs ?? DEFAULT_DEADLINE_MS,
    dirtyLog: options.dirtyLog,
    ...(options.offline ? { offline: options.offline } : {}),
    ...(options.markOffline ? { markOffline: options.markOffline } : {}),
    ...(options.markOnline ? { markOnline: options.markOnline } : {}),
    ...(options.onFailure ? { onFailure: options.onFailure } : {}),
    ...(options.copyChunkBytes !== undefined ? { copyChunkBytes: options.copyChunkBytes } : {}),
    ...(options.copyConcurrency !== undefined ? { copyConcurrency: options.copyConcurrency } : {}),
    ...(options.resumeCopies !== undefined ? { resumeCopies: options.resumeCopies } : {}),
  });
  const { top, parts } = stackAbove(set, latch, options, {
    backend: () => set.backendCounts(),
    throttle: () => set.throttleStats(),
  });
  const volume = new ReplicatedVolume([top, latch, parts], set);
  await loadMap(volume, parts, latch);
  return volume;
}
