/**
 * A pool's storage failed a control-plane operation. Carries what the
 * service said (status, x-ms-error-code) and never the request URL, which
 * may hold a SAS.
 */
import { restCode, restStatus } from "../rest-error.ts";

export class StorageFailure extends Error {
  readonly pool: string;
  readonly operation: string;
  /** HTTP status; undefined for network-level failures. */
  readonly status: number | undefined;
  /** x-ms-error-code, or the socket error code (ECONNREFUSED, ...). */
  readonly azureCode: string | undefined;

  constructor(pool: string, operation: string, cause: unknown) {
    const status = restStatus(cause);
    const azureCode = restCode(cause);
    super(
      `pool ${pool}: ${operation} failed (${status ?? "no response"}${azureCode ? ` ${azureCode}` : ""})`,
      { cause },
    );
    this.name = "StorageFailure";
    this.pool = pool;
    this.operation = operation;
    this.status = status;
    this.azureCode = azureCode;
  }
}

/** Run one storage call on behalf of `pool`, turning SDK errors into `StorageFailure`. */
export async function onPool<T>(
  pool: string,
  operation: string,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw new StorageFailure(pool, operation, err);
  }
}
