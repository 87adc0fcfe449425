/**
 * Errors of the replica layer.
 *
 * - `ReplicaFault`: one replica cannot serve (its blob is gone, its
 *   credentials are refused, it kept failing past its retry deadline, or it
 *   was taken offline while the request waited). It is not a StorageError
 *   on purpose: the volume's fence, throttle and failure guard act on fatal
 *   StorageErrors, and one replica's fault must take only that replica
 *   offline. The replica layer unwraps it when the replica was the last
 *   ONLINE one, and the volume then fails exactly as with one backend.
 * - `ReplicaError`: misuse of the replica API or a copy that could not
 *   finish, with a stable `code`.
 */
import { StorageError } from "../pageblob/errors.ts";
import { RetryDeadlineError } from "./throttle.ts";

export type ReplicaErrorCode =
  /** No member with that id. */
  | "UnknownReplica"
  /** The operation would leave the volume without an ONLINE member. */
  | "LastOnlineReplica"
  /** No member is ONLINE (at open), so there is nothing to serve or copy from. */
  | "NoOnlineReplica"
  /** A replica's device is not the volume's size. */
  | "SizeMismatch"
  /** Two members with one id. */
  | "DuplicateReplica"
  /** A resync or rebuild stopped: the target failed, was removed, or the volume closed. */
  | "CopyFailed";

export class ReplicaError extends Error {
  readonly code: ReplicaErrorCode;
  readonly replica: string | undefined;
  constructor(
    code: ReplicaErrorCode,
    message: string,
    opts: { replica?: string; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = "ReplicaError";
    this.code = code;
    this.replica = opts.replica;
  }
}

/** One replica failed; the storage error (or deadline) that says why is `cause`. */
export class ReplicaFault extends Error {
  readonly replica: string;
  /** StorageError code of the cause, "Offline" when the replica was taken offline meanwhile. */
  readonly code: string;
  readonly status: number;
  readonly azureCode: string | undefined;
  constructor(
    replica: string,
    cause: StorageError | RetryDeadlineError | undefined,
    message?: string,
  ) {
    super(message ?? `replica ${replica}: ${cause?.message ?? "offline"}`, { cause });
    this.name = "ReplicaFault";
    this.replica = replica;
    const storage =
      cause instanceof RetryDeadlineError ? (cause.cause as StorageError | undefined) : cause;
    this.code = cause?.code ?? "Offline";
    this.status = storage?.status ?? 0;
    this.azureCode = storage?.azureCode;
  }

  /** What fails the volume when this replica was the last ONLINE one. */
  get volumeCause(): StorageError | RetryDeadlineError {
    const c = this.cause;
    if (c instanceof StorageError || c instanceof RetryDeadlineError) return c;
    return new StorageError("Transient", this.message, { cause: this });
  }
}

/**
 * Errors that take one replica offline: a fatal StorageError other than
 * LeaseLost (contained as a ReplicaFault), a retry deadline, or the member's
 * own abort. LeaseLost fails the whole volume; BlockErrors and Invalid are
 * our own bugs or bad input and would fail on every replica alike.
 */
export function isReplicaFault(err: unknown): err is ReplicaFault | RetryDeadlineError {
  return err instanceof ReplicaFault || err instanceof RetryDeadlineError;
}
