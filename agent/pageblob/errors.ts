/**
 * Typed errors of the page blob boundary. `pageblob/` turns HTTP statuses,
 * Azure error codes and socket errors into exactly one of these; nothing
 * above it looks at a status code.
 *
 * - `Throttled`  503 ServerBusy, 500 OperationTimedOut: pause and retry.
 * - `Transient`  other 5xx, 408, resets, timeouts: retry with backoff. When
 *                a write's attempt was left in doubt, its Retry-After says
 *                when it can no longer land (in-doubt.ts): not before.
 * - `LeaseLost`  412 lease missing / mismatched / broken, and the 409s of
 *                lease operations that mean someone else holds the lease: fenced, fatal.
 * - `BlobGone`   404 (BlobNotFound, ContainerNotFound, a HEAD without body): fatal.
 * - `Forbidden`  403 (SAS expired, wrong key, no permission): fatal.
 * - `Invalid`    other 4xx: a bug or bad input, not retried.
 */
export type StorageErrorCode =
  | "Throttled"
  | "Transient"
  | "LeaseLost"
  | "BlobGone"
  | "Forbidden"
  | "Invalid";

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  /** HTTP status, 0 for network-level failures. */
  readonly status: number;
  /** x-ms-error-code when the service sent one. */
  readonly azureCode: string | undefined;
  /** Milliseconds from a Retry-After header, when present. */
  readonly retryAfterMs: number | undefined;
  /** x-ms-request-id of the failed request, for support cases and logs. */
  readonly requestId: string | undefined;

  constructor(
    code: StorageErrorCode,
    message: string,
    init: {
      status?: number;
      azureCode?: string | undefined;
      retryAfterMs?: number | undefined;
      requestId?: string | undefined;
      cause?: unknown;
    } = {},
  ) {
    super(message, { cause: init.cause });
    this.name = "StorageError";
    this.code = code;
    this.status = init.status ?? 0;
    this.azureCode = init.azureCode;
    this.retryAfterMs = init.retryAfterMs;
    this.requestId = init.requestId;
  }

  /** Throttled and Transient may succeed when retried; the rest never will. */
  get retriable(): boolean {
    return this.code === "Throttled" || this.code === "Transient";
  }

  /** Errors that fail the volume (DESIGN.md, "Failure"). */
  get fatal(): boolean {
    return this.code === "LeaseLost" || this.code === "BlobGone" || this.code === "Forbidden";
  }
}

export function isStorageError(err: unknown): err is StorageError {
  return err instanceof StorageError;
}
