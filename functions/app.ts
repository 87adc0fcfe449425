/**
 * The control plane's HTTP API as a Hono app. Platform-free: index.ts (Azure
 * Functions) and local.ts (Node) only adapt requests to `app.fetch`.
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { type ControlPlaneOptions, controlPlane } from "./control-plane.ts";
import { ApiError } from "./http/api-error.ts";
import { type Authenticator, guard, type VerifyAdminKey } from "./http/auth.ts";
import { errorResponder, notFound } from "./http/errors.ts";
import { openApiDocument } from "./http/openapi.ts";
import { mount, type Operation } from "./http/operation.ts";
import { verifyAdminKey } from "./registry/admin-keys.ts";
import { attachmentOperations } from "./routes/attachments.ts";
import { eventOperations } from "./routes/events.ts";
import { nodeAgentOperations } from "./routes/node-agent.ts";
import { nodeOperations } from "./routes/nodes.ts";
import { openApiOperation } from "./routes/openapi.ts";
import { poolOperations } from "./routes/pools.ts";
import { tokenOperations } from "./routes/tokens.ts";
import { volumeOperations } from "./routes/volumes.ts";

/** Every route of this version lives below this prefix. */
export const API_PREFIX = "/api/v1";
/** Largest request body accepted; API documents are small, so anything bigger is a mistake or abuse. */
export const DEFAULT_BODY_LIMIT_BYTES = 64 * 1024;

export interface AppOptions extends ControlPlaneOptions {
  bodyLimitBytes?: number;
  /** Admin key check; defaults to the hashes in the registry's credentials table. */
  verifyAdminKey?: VerifyAdminKey;
}

export function createApp(options: AppOptions): Hono {
  const cp = controlPlane(options);
  const maxSize = options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  const auth: Authenticator = {
    registry: cp.registry,
    now: cp.now,
    verifyAdminKey: options.verifyAdminKey ?? ((key) => verifyAdminKey(cp.registry, key)),
  };

  const app = new Hono();
  app.onError(errorResponder(cp.report));
  app.notFound(notFound);
  app.use(
    `${API_PREFIX}/*`,
    bodyLimit({
      maxSize,
      onError: () => {
        throw new ApiError("PayloadTooLarge", `request body exceeds ${maxSize} bytes`, {
          limit: maxSize,
        });
      },
    }),
  );
  const operations: Operation[] = [
    ...poolOperations(cp),
    ...volumeOperations(cp),
    ...attachmentOperations(cp),
    ...eventOperations(cp),
    ...tokenOperations(cp),
    ...nodeAgentOperations(cp),
    ...nodeOperations(cp),
  ];
  operations.push(
    openApiOperation(() =>
      openApiDocument(API_PREFIX, operations, { title: "pagedisk control plane", version: "1" }),
    ),
  );
  mount(app, API_PREFIX, operations, (access) => guard(access, auth));
  return app;
}
