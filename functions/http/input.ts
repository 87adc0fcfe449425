/**
 * Request input at the edge: JSON parsing and schema validation. Whatever
 * passes here is typed and trusted by the routes; whatever fails is a 400
 * that names the field.
 */
import type { Context } from "hono";
import type { z } from "zod";
import { ApiError } from "./api-error.ts";

/** Where in the request a value came from, used as the first segment of issue paths. */
export type InputPart = "path" | "query" | "body";

/** Issues listed in the message; all of them (up to a bound) are in `details.issues`. */
const ISSUES_IN_MESSAGE = 3;
const ISSUES_IN_DETAILS = 20;

/** Parse the body as JSON; `InvalidJson` when it is empty or malformed. */
export async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "")
    throw new ApiError("InvalidJson", "request body is empty; expected a JSON document");
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError("InvalidJson", `request body is not valid JSON: ${(err as Error).message}`);
  }
}

/** `InvalidRequest` for one value that passed its schema but means nothing here (a token, a host). */
export function invalidInput(path: string, message: string): ApiError {
  return new ApiError("InvalidRequest", `${path}: ${message}`, { issues: [{ path, message }] });
}

/** Validate `value` against `schema`; `InvalidRequest` listing the issues when it fails. */
export function parseInput<S extends z.ZodType>(
  schema: S,
  value: unknown,
  part: InputPart,
): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues.slice(0, ISSUES_IN_DETAILS).map((issue) => ({
    path: [part, ...issue.path.map(String)].join("."),
    message: issue.message,
  }));
  const summary = issues
    .slice(0, ISSUES_IN_MESSAGE)
    .map((i) => `${i.path}: ${i.message}`)
    .join("; ");
  const more = result.error.issues.length - ISSUES_IN_MESSAGE;
  throw new ApiError("InvalidRequest", more > 0 ? `${summary}; and ${more} more` : summary, {
    issues,
  });
}
