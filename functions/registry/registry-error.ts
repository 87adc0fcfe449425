/**
 * Typed outcomes of conditional writes to the registry. Table Storage
 * answers with HTTP statuses; callers should branch on what they mean:
 *
 * - `Conflict`  412: the row changed since it was read (ETag mismatch). Re-read and retry, or give up with 409.
 * - `Exists`    409 on insert: the key is taken.
 * - `Missing`   404: the row is gone.
 */
export type RegistryErrorCode = "Conflict" | "Exists" | "Missing";

export class RegistryError extends Error {
  readonly code: RegistryErrorCode;
  readonly table: string;
  readonly partitionKey: string;
  readonly rowKey: string;

  constructor(
    code: RegistryErrorCode,
    where: { table: string; partitionKey: string; rowKey: string },
    options?: { cause?: unknown },
  ) {
    super(`${code}: ${where.table}(${where.partitionKey}, ${where.rowKey})`, options);
    this.name = "RegistryError";
    this.code = code;
    this.table = where.table;
    this.partitionKey = where.partitionKey;
    this.rowKey = where.rowKey;
  }
}

export function isRegistryError(err: unknown, code?: RegistryErrorCode): err is RegistryError {
  return err instanceof RegistryError && (code === undefined || err.code === code);
}
