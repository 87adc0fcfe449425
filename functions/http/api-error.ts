/**
 * The one error type routes throw. Its `code` is one of the contract's
 * stable codes and fixes the HTTP status; `details` is structured data a
 * client may use (issue paths, the owner node, the volumes in a pool).
 */
import { type ApiErrorCode, ERROR_STATUS, type ErrorBody } from "../../contract/errors.ts";

export class ApiError extends Error {
  readonly code: ApiErrorCode;
  readonly details: unknown;

  constructor(code: ApiErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.details = details;
  }

  get status(): (typeof ERROR_STATUS)[ApiErrorCode] {
    return ERROR_STATUS[this.code];
  }

  toBody(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details === undefined ? {} : { details: this.details }),
      },
    };
  }
}
