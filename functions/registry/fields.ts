/**
 * Property encodings Table Storage needs: numbers beyond Int32, and
 * structured values kept as JSON strings within the per-property limit.
 */

/** A string property holds at most 64 KiB, i.e. 32 Ki UTF-16 code units. */
export const MAX_STRING_PROPERTY_CHARS = 32 * 1024;

/** An Int64 property. Plain JS numbers are sent untyped and the service would store them as Int32 or Double. */
export function int64(n: number): { value: string; type: "Int64" } {
  if (!Number.isSafeInteger(n)) throw new RangeError(`not a safe integer: ${n}`);
  return { value: String(n), type: "Int64" };
}

/** Read back an Int64 (the SDK gives a bigint) or an Int32/Double number. */
export function fromInt64(v: unknown): number {
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number") return v;
  throw new TypeError(`expected an integer property, got ${typeof v}`);
}

/** JSON-encode a value for one string property, refusing what the service would refuse. */
export function packJson(field: string, value: unknown): string {
  const text = JSON.stringify(value);
  if (text.length > MAX_STRING_PROPERTY_CHARS) {
    throw new RangeError(
      `${field} is ${text.length} chars as JSON, over the ${MAX_STRING_PROPERTY_CHARS} a property holds`,
    );
  }
  return text;
}

export function unpackJson(v: unknown): unknown {
  if (typeof v !== "string")
    throw new TypeError(`expected a JSON string property, got ${typeof v}`);
  return JSON.parse(v);
}
