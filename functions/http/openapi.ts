/**
 * The OpenAPI 3.0 document, assembled from the operations' own schemas with
 * zod's JSON Schema output. Requests are described as clients write them
 * (defaults optional), responses as the server sends them.
 */
import { z } from "zod";
import { type ApiErrorCode, ERROR_STATUS, ErrorBody } from "../../contract/errors.ts";
import type { Operation, ParameterSchema } from "./operation.ts";
import { isLimited } from "./rate-limit.ts";

type Json = Record<string, unknown>;

const SECURITY_SCHEME = {
  admin: "adminKey",
  node: "nodeCredential",
  join: "joinToken",
} as const;

export interface OpenApiInfo {
  title: string;
  version: string;
}

/**
 * The document for `operations` below `prefix`, plus `otherPaths`: path
 * items written by hand for routes that are not JSON operations (downloads).
 */
export function openApiDocument(
  prefix: string,
  operations: readonly Operation[],
  info: OpenApiInfo,
  otherPaths: Record<string, Record<string, Json>> = {},
): Json {
  const paths: Record<string, Record<string, Json>> = { ...otherPaths };
  for (const op of operations) {
    const path = `${prefix}${op.path}`.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
    paths[path] ??= {};
    paths[path][op.method] = describe(op);
  }
  return {
    openapi: "3.0.3",
    info,
    paths,
    components: {
      schemas: { ErrorBody: schemaOf(ErrorBody, "output") },
      securitySchemes: {
        adminKey: { type: "http", scheme: "bearer", description: "admin API key (pdk_...)" },
        nodeCredential: {
          type: "http",
          scheme: "bearer",
          description: "the node's own credential (pdn_<node>_...), from joining",
        },
        joinToken: { type: "http", scheme: "bearer", description: "join token (pdj_...)" },
      },
    },
  };
}

function describe(op: Operation): Json {
  const parameters = [...parametersOf(op.params, "path"), ...parametersOf(op.query, "query")];
  const success: Json = { description: op.success.description };
  if (op.success.schema)
    success.content = { "application/json": { schema: schemaOf(op.success.schema, "output") } };
  return {
    operationId: op.operationId,
    summary: op.summary,
    ...(op.access === "public" ? {} : { security: [{ [SECURITY_SCHEME[op.access]]: [] }] }),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(op.body
      ? {
          requestBody: {
            required: true,
            content: { "application/json": { schema: schemaOf(op.body, "input") } },
          },
        }
      : {}),
    responses: { [op.success.status]: success, ...errorResponses(op) },
  };
}

function parametersOf(schema: ParameterSchema | undefined, where: "path" | "query"): Json[] {
  if (!schema) return [];
  return Object.entries(schema.shape).map(([name, field]) => ({
    name,
    in: where,
    required: where === "path" || !z.safeParse(field, undefined).success,
    schema: schemaOf(field, "input"),
  }));
}

const RETRY_AFTER = {
  "Retry-After": {
    description: "seconds to wait before the call may be made again",
    schema: { type: "integer", minimum: 1 },
  },
};

/** Group the operation's error codes (its own and the common ones) by status. */
function errorResponses(op: Operation): Record<string, Json> {
  const codes = new Set<ApiErrorCode>(op.errors ?? []);
  if (op.params || op.query || op.body) codes.add("InvalidRequest");
  if (op.body) {
    codes.add("InvalidJson");
    codes.add("PayloadTooLarge");
  }
  if (op.access !== "public") {
    codes.add("Unauthorized");
    codes.add("Forbidden");
    if (isLimited(op.method)) codes.add("TooManyRequests");
  }
  codes.add("Internal");
  const byStatus = new Map<number, ApiErrorCode[]>();
  for (const code of codes)
    byStatus.set(ERROR_STATUS[code], [...(byStatus.get(ERROR_STATUS[code]) ?? []), code]);
  const body = { $ref: "#/components/schemas/ErrorBody" };
  return Object.fromEntries(
    [...byStatus].map(([status, list]) => [
      status,
      {
        description: `error code ${list.join(" or ")}`,
        ...(status === ERROR_STATUS.TooManyRequests ? { headers: RETRY_AFTER } : {}),
        content: { "application/json": { schema: body } },
      },
    ]),
  );
}

function schemaOf(schema: z.core.$ZodType, io: "input" | "output"): Json {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, {
    target: "openapi-3.0",
    io,
    unrepresentable: "any",
  });
  // Responses may gain fields in later versions; a client generated from this document must not refuse them.
  return io === "output" ? (openObjects(rest) as Json) : rest;
}

/** Drop `additionalProperties: false` everywhere in a JSON Schema. */
function openObjects(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(openObjects);
  if (typeof node !== "object" || node === null) return node;
  return Object.fromEntries(
    Object.entries(node)
      .filter(([key, value]) => !(key === "additionalProperties" && value === false))
      .map(([key, value]) => [key, openObjects(value)]),
  );
}
