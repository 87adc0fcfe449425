/**
 * `GET /api/v1/openapi.json`: the API's own description, public like any
 * API reference. Built on first request and kept, since routes are fixed
 * once the app is built.
 */
import { z } from "zod";
import { type Operation, operation } from "../http/operation.ts";

export function openApiOperation(build: () => Record<string, unknown>): Operation {
  let document: Record<string, unknown> | undefined;
  return operation({
    method: "get",
    path: "/openapi.json",
    operationId: "getOpenApi",
    summary: "This API's OpenAPI 3.0 document",
    access: "public",
    success: {
      status: 200,
      description: "the OpenAPI document",
      schema: z.record(z.string(), z.unknown()),
    },
    handle: async () => {
      document ??= build();
      return document;
    },
  });
}
