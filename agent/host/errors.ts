/**
 * The one error type of agent/host, with a stable code the daemon can act on
 * and report:
 *
 * - `INVALID_REQUEST`     a field of the BindRequest is wrong; nothing was done.
 * - `EXPORT_UNREACHABLE`  nobody serves the export at the socket (or under that name).
 * - `SIZE_MISMATCH`       the export's size is not the size the request expects.
 * - `DRIVER_MISSING`      the kernel driver or a tool the binder needs is absent.
 * - `TOOL_FAILED`         nbd-client, nbdfuse, losetup or fusermount3 failed otherwise.
 */
export type BindErrorCode =
  | "INVALID_REQUEST"
  | "EXPORT_UNREACHABLE"
  | "SIZE_MISMATCH"
  | "DRIVER_MISSING"
  | "TOOL_FAILED";

export class BindError extends Error {
  readonly code: BindErrorCode;

  constructor(code: BindErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts);
    this.name = "BindError";
    this.code = code;
  }
}
