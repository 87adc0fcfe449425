/**
 * The boundary where HTTP statuses, Azure error codes and socket failures
 * become a `StorageError`. Nothing above `pageblob/` sees a status code.
 */
import { StorageError, type StorageErrorCode } from "./errors.ts";

/** What the classification needs from an error response. */
export interface ErrorResponse {
  status: number;
  /** x-ms-error-code header, or <Code> of the XML error body. */
  azureCode: string | undefined;
  /** Raw Retry-After header value. */
  retryAfter: string | undefined;
  message?: string;
  requestId?: string;
}

/**
 * 409 codes of lease operations that mean "the lease you think you hold (or
 * want) belongs to someone else or no longer exists". For a writer these are
 * the same news as a 412 on a data operation: it is fenced.
 */
const LEASE_CONFLICTS = new Set([
  "LeaseAlreadyPresent",
  "LeaseIdMismatchWithLeaseOperation",
  "LeaseNotPresentWithLeaseOperation",
  "LeaseIsBrokenAndCannotBeRenewed",
  "LeaseIsBreakingAndCannotBeAcquired",
  "LeaseIsBreakingAndCannotBeChanged",
  "LeaseAlreadyBroken",
  "LeaseLost",
]);

/** Map an error response of the Blob service to its StorageError code. */
export function codeForResponse(status: number, azureCode: string | undefined): StorageErrorCode {
  if (status === 503 && azureCode === "ServerBusy") return "Throttled";
  if (status === 500 && azureCode === "OperationTimedOut") return "Throttled";
  if (status >= 500) return "Transient";
  // Every 412 on a page blob is a lease or ETag precondition: the writer is fenced.
  if (status === 412) return "LeaseLost";
  if (status === 409 && azureCode !== undefined && LEASE_CONFLICTS.has(azureCode)) {
    return "LeaseLost";
  }
  // A HEAD has no body and, on some services, no error code: any 404 on a blob URL means gone.
  if (status === 404) return "BlobGone";
  if (status === 403) return "Forbidden";
  // 408 Request Timeout is the server giving up on a slow upload: worth a retry.
  if (status === 408) return "Transient";
  return "Invalid";
}

/** Build the StorageError for an HTTP error response. */
export function fromResponse(res: ErrorResponse, what: string): StorageError {
  const code = codeForResponse(res.status, res.azureCode);
  const detail = res.azureCode ?? `HTTP ${res.status}`;
  const message = `${what}: ${detail}${res.message ? ` (${res.message})` : ""}`;
  return new StorageError(code, message, {
    status: res.status,
    azureCode: res.azureCode,
    retryAfterMs: parseRetryAfter(res.retryAfter),
    requestId: res.requestId,
  });
}

/** undici error codes that are our bug, not the network's. */
const PROGRAMMING_ERRORS = new Set([
  "UND_ERR_INVALID_ARG",
  "UND_ERR_NOT_SUPPORTED",
  "UND_ERR_INVALID_RETURN_VALUE",
  "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH",
]);

/**
 * Map a failure below HTTP (connect refused, reset, socket or header
 * timeout, aborted stream) to a StorageError. Everything the network can do
 * to us is Transient; the engine decides how long "transient" may last.
 */
export function fromNetworkError(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const code = errorCode(err);
  const text = err instanceof Error ? err.message : String(err);
  const kind: StorageErrorCode = code && PROGRAMMING_ERRORS.has(code) ? "Invalid" : "Transient";
  return new StorageError(kind, `${what}: ${code ?? "network error"}: ${text}`, { cause: err });
}

/**
 * Failures that happen before a request can have left this machine: no
 * connection was made, so the service never saw it.
 */
const NEVER_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "UND_ERR_CONNECT_TIMEOUT"]);

/**
 * Whether a request that failed with `err` may still be carried out by the
 * service: no verdict came back. A 2xx or 4xx is a verdict, and so are 503
 * ServerBusy (refused before any work) and 500 OperationTimedOut (the
 * service's own timeout passed, after which it commits nothing). A failure
 * to connect is one too. Everything else, resets and our own timeouts above
 * all, leaves the request in doubt (in-doubt.ts).
 */
export function leavesInDoubt(err: StorageError): boolean {
  if (err.code === "Invalid") return false;
  if (err.status === 0) {
    const code = errorCode(err.cause);
    return code === undefined || !NEVER_SENT.has(code);
  }
  if (err.status < 500) return false;
  return err.azureCode !== "ServerBusy" && err.azureCode !== "OperationTimedOut";
}

function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  // undici wraps socket errors; the errno code sits on the cause.
  for (let depth = 0; depth < 3 && e && typeof e === "object"; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Retry-After is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
 * Returns milliseconds, or undefined when absent or unparseable.
 */
export function parseRetryAfter(
  value: string | undefined,
  now: number = Date.now(),
): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}
