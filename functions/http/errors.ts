/**
 * The one place errors become responses: `ApiError` as it is; the typed
 * errors of the layers below by what they mean; anything else as a bare 500
 * that tells the client nothing and is reported.
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { isRegistryError } from "../registry/registry-error.ts";
import { TransitionRefused } from "../registry/state-machine.ts";
import { StorageFailure } from "../storage/storage-failure.ts";
import { ApiError } from "./api-error.ts";

/** Where unexpected errors go (a logger in production, a spy in tests). */
export type ReportError = (err: unknown) => void;

/** Map any thrown value to the `ApiError` the client sees. */
export function toApiError(err: unknown): ApiError | undefined {
  if (err instanceof ApiError) return err;
  if (isRegistryError(err)) {
    // Routes handle the races they expect; one that gets here lost to a concurrent request.
    return new ApiError("Conflict", "the record changed under a concurrent request; retry", {
      table: err.table,
    });
  }
  if (err instanceof TransitionRefused) {
    return new ApiError(
      "Conflict",
      `${err.machine} is ${err.from} and cannot become ${err.to} now`,
      {
        from: err.from,
        to: err.to,
      },
    );
  }
  if (err instanceof StorageFailure) {
    return new ApiError("StorageFailed", err.message, {
      pool: err.pool,
      operation: err.operation,
      status: err.status ?? null,
      azureCode: err.azureCode ?? null,
    });
  }
  if (err instanceof HTTPException && err.status === 413) {
    return new ApiError("PayloadTooLarge", "request body too large");
  }
  if (err instanceof HTTPException && err.status < 500) {
    return new ApiError("InvalidRequest", err.message || "bad request");
  }
  return undefined;
}

/** `app.onError` handler. */
export function errorResponder(report: ReportError) {
  return function respondWithError(err: Error, c: Context): Response {
    let apiError = toApiError(err);
    if (!apiError) {
      report(err);
      apiError = new ApiError("Internal", "internal error");
    }
    if (apiError.code === "Unauthorized") c.header("WWW-Authenticate", 'Bearer realm="pagedisk"');
    if (apiError.code === "TooManyRequests") {
      const { retryAfterSeconds } = apiError.details as { retryAfterSeconds: number };
      c.header("Retry-After", String(retryAfterSeconds));
    }
    return c.json(apiError.toBody(), apiError.status as ContentfulStatusCode);
  };
}

/** `app.notFound` handler: unknown routes answer in the same error shape. */
export function notFound(c: Context): Response {
  const error = new ApiError(
    "NotFound",
    `no route for ${c.req.method} ${new URL(c.req.url).pathname}`,
  );
  return c.json(error.toBody(), 404);
}
