/**
 * Reading Azure SDK errors (`RestError` from Table and Blob clients) without
 * depending on which copy of @azure/core-rest-pipeline threw them.
 */

/** HTTP status of the failed request; undefined when no response came (socket errors). */
export function restStatus(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const status = (err as { statusCode?: unknown }).statusCode;
  return typeof status === "number" ? status : undefined;
}

/** Azure's `x-ms-error-code`, or a Node socket code such as `ECONNREFUSED`. */
export function restCode(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}
