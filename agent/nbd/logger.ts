/**
 * The logging surface the NBD server needs: pino's `(obj, msg)` call shape,
 * so a pino logger (or a child of one) can be passed as is, without the NBD
 * layer depending on pino.
 */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** A logger that drops everything; the default when none is given. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
