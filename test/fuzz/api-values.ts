/**
 * Values for the API fuzzer: a valid value for a JSON Schema of the OpenAPI
 * document (the starting point of most mutations), a value of the wrong type
 * for one, strings that names should never be, and JSON text of every
 * size and shape.
 */
import type { Random } from "./random.ts";

/** The subset of JSON Schema (OpenAPI 3.0 flavour) that zod writes for our contract. */
export interface Schema {
  type?: "object" | "array" | "string" | "integer" | "number" | "boolean";
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  minItems?: number;
  maxItems?: number;
  enum?: unknown[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  multipleOf?: number;
  nullable?: boolean;
  oneOf?: Schema[];
  anyOf?: Schema[];
  default?: unknown;
}

/**
 * Strings that satisfy the contract's patterns: names the fuzz owns
 * (`fz-…`, never the fixture's own), ids, digits. The first that matches
 * a field's pattern is used.
 */
function candidates(r: Random, existing: readonly string[]): string[] {
  return [
    ...(existing.length > 0 && r.chance(0.3) ? [r.pick(existing)] : []),
    `fz-${r.int(1000)}`,
    "0123456789abcdef".slice(0, 16),
    "0123456789ab",
    String(r.int(1e6)),
    "volume-attached",
    "pagedisk/fz-blob",
    "a text with spaces",
  ];
}

/**
 * A value valid for `schema`. `existing` are names the fixture made (a
 * volume, a pool, a node): sometimes used, so that calls reach records
 * that exist, where the caller allows it.
 */
export function validValue(schema: Schema, r: Random, existing: readonly string[] = []): unknown {
  if (schema.enum) return r.pick(schema.enum);
  if (schema.oneOf) return validValue(r.pick(schema.oneOf), r, existing);
  if (schema.anyOf) return validValue(r.pick(schema.anyOf), r, existing);
  switch (schema.type) {
    case "object": {
      const out: Record<string, unknown> = {};
      for (const [key, prop] of Object.entries(schema.properties ?? {})) {
        if (schema.required?.includes(key) || r.chance(0.5)) out[key] = validValue(prop, r, existing);
      }
      if (typeof schema.additionalProperties === "object" && r.chance(0.5)) {
        out[`k${r.int(10)}`] = validValue(schema.additionalProperties, r, existing);
      }
      return out;
    }
    case "array": {
      const n = Math.min(schema.maxItems ?? 3, Math.max(schema.minItems ?? 0, r.int(3)));
      return Array.from({ length: n }, () => validValue(schema.items ?? {}, r, existing));
    }
    case "string": {
      if (schema.pattern) {
        const re = new RegExp(schema.pattern, "u");
        const found = candidates(r, existing).find((c) => re.test(c));
        if (found !== undefined) return found;
      }
      const n = Math.max(schema.minLength ?? 1, Math.min(schema.maxLength ?? 12, 12));
      return "x".repeat(n);
    }
    case "integer":
    case "number": {
      const step = schema.multipleOf ?? 1;
      const lo = Math.ceil((schema.minimum ?? 0) / step);
      const hi = Math.floor(Math.min(schema.maximum ?? 1e6, (schema.minimum ?? 0) + 4096 * step) / step);
      return step * r.between(lo, Math.max(lo, hi));
    }
    case "boolean":
      return true;
    default:
      return r.pick(["x", 1, true]);
  }
}

/** A value whose JSON type differs from what `schema` allows, or that breaks one of its bounds. */
export function wrongValue(schema: Schema, r: Random): unknown {
  const bound: unknown[] = [];
  if (schema.maxLength !== undefined) bound.push("y".repeat(schema.maxLength + 1));
  if (schema.minLength !== undefined && schema.minLength > 0) bound.push("");
  if (schema.maximum !== undefined) bound.push(schema.maximum + (schema.multipleOf ?? 1));
  if (schema.minimum !== undefined) bound.push(schema.minimum - (schema.multipleOf ?? 1));
  if (schema.multipleOf !== undefined) bound.push((schema.minimum ?? 0) + schema.multipleOf + 1);
  if (schema.type === "integer") bound.push(1.5, 2 ** 64, -0.000001);
  if (schema.maxItems !== undefined) bound.push(Array.from({ length: schema.maxItems + 1 }, () => "x"));
  if (schema.pattern) bound.push(nastyString(r));
  if (schema.enum) bound.push("NOT-IN-ENUM", String(schema.enum[0]).toUpperCase() + "x");
  const types: Record<string, unknown[]> = {
    string: [7, true, null, [], {}, 1e308],
    integer: ["1", "one", true, null, [1], { n: 1 }],
    number: ["1", null, [], {}, false],
    boolean: ["true", 1, 0, null, []],
    array: [{}, "[]", 1, null, { length: 1 }],
    object: [[], "{}", 1, null, true],
  };
  const wrongType = types[schema.type ?? "object"] ?? [null];
  return r.chance(0.5) && bound.length > 0 ? r.pick(bound) : r.pick(wrongType);
}

/** Strings that no name, id or query value should be; some are safe only once percent-encoded. */
export const NASTY_STRINGS: readonly string[] = [
  "",
  " ",
  ".",
  "..",
  "%",
  "%00",
  "%zz",
  "%E0%A4%A",
  "%2F",
  "%2e%2e",
  "a/b",
  "a\\b",
  "a#b",
  "a?b=c",
  "a%b",
  "a&b",
  "a;b",
  "\u0000",
  "\u0007",
  "\t",
  "\r\n",
  "\u007f",
  "\u202e",
  "\ufeff",
  "é",
  "名前",
  "💥",
  "A",
  "-a",
  "a-",
  "__proto__",
  "constructor",
  "toString",
  "hasOwnProperty",
  "null",
  "undefined",
  "${x}",
  "a'b",
  'a"b',
  "PartitionKey eq 'x' or true",
  "<script>",
  "../../etc/passwd",
];

/** A nasty string, a huge one, or a long run of non-ASCII. */
export function nastyString(r: Random): string {
  return r.weighted<() => string>([
    [() => r.pick(NASTY_STRINGS), 8],
    [() => "a".repeat(r.pick([64, 254, 1024, 10_000, 100_000])), 2],
    [() => "é💥".repeat(r.pick([10, 1000])), 1],
    [() => `fz-${r.pick(NASTY_STRINGS)}`, 2],
  ])();
}

/** JSON text (or not quite) of every size and shape, for any body. */
export function oddBody(r: Random, valid: string, limit: number): { text: string | Uint8Array; what: string } {
  return r.weighted<() => { text: string | Uint8Array; what: string }>([
    [() => ({ text: "", what: "empty" }), 1],
    [() => ({ text: " \n\t ", what: "whitespace" }), 1],
    [() => ({ text: r.pick(["null", "[]", "0", '"x"', "true"]), what: "another JSON type" }), 2],
    [() => ({ text: valid.slice(0, r.int(Math.max(1, valid.length))), what: "truncated" }), 3],
    // Fetch's text() drops a UTF-8 byte order mark: the body stays valid.
    [() => ({ text: `\ufeff${valid}`, what: "byte order mark (still valid)" }), 1],
    [() => ({ text: Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xff, 0xfe, 0xc0]), Buffer.from('"}')]), what: "not UTF-8" }), 1],
    [() => {
      const depth = r.pick([100, 10_000, 1_000_000]);
      return { text: "[".repeat(depth) + "]".repeat(depth), what: `arrays nested ${depth} deep` };
    }, 2],
    [() => {
      const depth = r.pick([100, 5_000, 100_000]);
      return { text: '{"a":'.repeat(depth) + "1" + "}".repeat(depth), what: `objects nested ${depth} deep` };
    }, 2],
    [() => {
      const mb = r.pick([1, 2, 4]);
      return { text: JSON.stringify({ name: "fz-big", pad: "a".repeat(mb * 1024 * 1024) }), what: `${mb} MB` };
    }, 2],
    [() => {
      const size = limit + r.pick([-1, 0, 1]);
      return { text: padTo(valid, size), what: `${size} bytes, around the limit` };
    }, 2],
    [() => ({ text: r.pick(['{"a":1e999999}', `{"a":${"9".repeat(5000)}}`, '{"a":-0}', '{"a":NaN}', '{"a":Infinity}']), what: "odd numbers" }), 1],
    [() => ({ text: `{"__proto__":{"admin":true},${valid.slice(1)}`, what: "__proto__ key" }), 1],
    // JSON.parse keeps the last of duplicate keys: the body may well stay valid.
    [() => ({ text: `{"name":"a","name":"b",${valid.slice(1)}`, what: "duplicate keys (maybe valid)" }), 1],
    [() => ({ text: r.bytes(r.between(1, 2048)), what: "random bytes" }), 1],
  ])();
}

/** `valid` (a JSON object's text) grown with whitespace to `size` bytes, still the same JSON. */
function padTo(valid: string, size: number): string {
  const bytes = Buffer.byteLength(valid);
  if (bytes >= size) return valid;
  return `${valid.slice(0, -1)}${" ".repeat(size - bytes)}}`;
}
