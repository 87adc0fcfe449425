/**
 * An API operation described once: method, path, input schemas, success
 * response and the error codes it may answer with. The same description
 * registers the Hono route (auth, validation, rendering) and becomes the
 * operation's entry in the OpenAPI document, so the two cannot drift.
 */
import type { Context, Hono, MiddlewareHandler } from "hono";
import { z } from "zod";
import type { ApiErrorCode } from "../../contract/errors.ts";
import { parseInput, readJson } from "./input.ts";

export const NoInput = z.strictObject({});
type NoInput = typeof NoInput;

/** Path and query schemas are objects: each key is one parameter. */
export type ParameterSchema = z.ZodObject<z.ZodRawShape, z.core.$ZodObjectConfig>;

export type Method = "get" | "post" | "patch" | "delete";

/**
 * Who may call: an admin key holder, the node named by the path's `:name`
 * (with its own credential), an agent holding a join token, or anyone.
 */
export type Access = "admin" | "node" | "join" | "public";

export interface Input<P extends ParameterSchema, Q extends ParameterSchema, B extends z.ZodType> {
  params: z.output<P>;
  query: z.output<Q>;
  body: z.output<B>;
  c: Context;
}

export interface OperationSpec<
  P extends ParameterSchema = NoInput,
  Q extends ParameterSchema = NoInput,
  B extends z.ZodType = z.ZodUndefined,
  R extends z.ZodType = z.ZodVoid,
> {
  method: Method;
  /** Path below `/api/v1`, in Hono syntax: `/volumes/:name`. */
  path: string;
  operationId: string;
  summary: string;
  access: Access;
  params?: P;
  query?: Q;
  body?: B;
  success: { status: 200 | 201 | 204; description: string; schema?: R };
  /** Error codes particular to this operation (the common ones are added). */
  errors?: readonly ApiErrorCode[];
  handle(input: Input<P, Q, B>): Promise<z.output<R>>;
}

/** An operation with its types erased, as stored in the route table. */
export type Operation = OperationSpec<ParameterSchema, ParameterSchema, z.ZodType, z.ZodType>;

/** Type-check an operation against its own schemas, then erase the types. */
export function operation<
  P extends ParameterSchema = NoInput,
  Q extends ParameterSchema = NoInput,
  B extends z.ZodType = z.ZodUndefined,
  R extends z.ZodType = z.ZodVoid,
>(spec: OperationSpec<P, Q, B, R>): Operation {
  return spec as unknown as Operation;
}

/**
 * Register `operations` on `app` below `prefix`. Authentication runs before
 * validation, so an anonymous caller learns nothing about the inputs.
 */
export function mount(
  app: Hono,
  prefix: string,
  operations: readonly Operation[],
  guard: (access: Exclude<Access, "public">) => MiddlewareHandler,
): void {
  for (const op of operations) {
    const method = op.method.toUpperCase();
    const path = `${prefix}${op.path}`;
    const handler = async function handleOperation(c: Context): Promise<Response> {
      const params = parseInput(op.params ?? NoInput, c.req.param(), "path");
      // Unknown query keys are refused only where a query schema exists; others ignore the query.
      const query = op.query ? parseInput(op.query, c.req.query(), "query") : {};
      const body = op.body ? parseInput(op.body, await readJson(c), "body") : undefined;
      const result = await op.handle({ params, query, body, c });
      if (op.success.status === 204) return c.body(null, 204);
      return c.json(result, op.success.status);
    };
    if (op.access === "public") app.on(method, path, handler);
    else app.on(method, path, guard(op.access), handler);
  }
}
