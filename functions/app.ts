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
import { CallerLimits, type RateLimits } from "./http/rate-limit.ts";
import { verifyAdminKey } from "./registry/admin-keys.ts";
import { attachmentOperations } from "./routes/attachments.ts";
import { eventOperations } from "./routes/events.ts";
import {
  type AgentFiles,
  agentDownloadPaths,
  mountAgentDownloads,
} from "./routes/agent-download.ts";
import { nodeAgentOperations } from "./routes/node-agent.ts";
import { nodeOperations } from "./routes/nodes.ts";
import { openApiOperation } from "./routes/openapi.ts";
import { poolOperations } from "./routes/pools.ts";
import { reconciliationOperations } from "./routes/reconciliation.ts";
import { tokenOperations } from "./routes/tokens.ts";
import { volumeOperations } from "./routes/volumes.ts";

/** Every route of this version lives below this prefix. */
export const API_PREFIX = "/api/v1";
/** Largest request body accepted; API documents are small, so anything bigger is a mistake or abuse. */
export const DEFAULT_BODY_LIMIT_BYTES = 64 * 1024;
/**
 * Largest agent report: 64 volume reports with stats, device names and six
 * replica reports reach 330 KB of JSON at the contract's bounds, and
 * events come on top. (`heartbeat` is where agents before 0.2 send it.)
 */
export const REPORT_BODY_LIMIT_BYTES = 512 * 1024;
const REPORT_PATH = new RegExp(`^${API_PREFIX}/nodes/[^/]+/(?:report|heartbeat)$`);

export interface AppOptions extends ControlPlaneOptions {
  bodyLimitBytes?: number;
  /** Blobs modified within this many ms are never orphans to delete; default 10 minutes. */
  orphanGraceMs?: number;
  /** Admin key check; defaults to the hashes in the registry's credentials table. */
  verifyAdminKey?: VerifyAdminKey;
  /** What `/api/agent/*` serves; defaults to the repository's bundle and install script. */
  agentFiles?: AgentFiles;
  /**
   * Rate limits on calls that change something (http/rate-limit.ts); none
   * unless given. The hosts give the settings' (runtime.ts).
   */
  rateLimits?: RateLimits;
  /** The rate limits' clock, monotonic milliseconds; defaults to `performance.now`. */
  rateLimitClock?: () => number;
}

export function createApp(options: AppOptions): Hono {
  const cp = controlPlane(options);
  const maxSize = options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  const limitTo = (limit: number) =>
    bodyLimit({
      maxSize: limit,
      onError: () => {
        throw new ApiError("PayloadTooLarge", `request body exceeds ${limit} bytes`, { limit });
      },
    });
  const limitBody = limitTo(maxSize);
  const limitReport = limitTo(Math.max(maxSize, REPORT_BODY_LIMIT_BYTES));
  const auth: Authenticator = {
    registry: cp.registry,
    now: cp.now,
    verifyAdminKey: options.verifyAdminKey ?? ((key) => verifyAdminKey(cp.registry, key)),
    ...(options.rateLimits
      ? {
          limits: new CallerLimits(
            options.rateLimits,
            options.rateLimitClock ?? (() => performance.now()),
          ),
        }
      : {}),
  };

  const app = new Hono();
  app.onError(errorResponder(cp.report));
  app.notFound(notFound);
  app.use(`${API_PREFIX}/*`, function limitRequestBody(c, next) {
    return (REPORT_PATH.test(c.req.path) ? limitReport : limitBody)(c, next);
  });
  const operations: Operation[] = [
    ...poolOperations(cp),
    ...volumeOperations(cp),
    ...attachmentOperations(cp),
    ...eventOperations(cp),
    ...tokenOperations(cp),
    ...nodeAgentOperations(cp),
    ...nodeOperations(cp),
    ...reconciliationOperations(cp, { orphanGraceMs: options.orphanGraceMs }),
  ];
  operations.push(
    openApiOperation(() =>
      openApiDocument(
        API_PREFIX,
        operations,
        { title: "pagedisk control plane", version: "1" },
        agentDownloadPaths(),
      ),
    ),
  );
  mount(app, API_PREFIX, operations, (access) => guard(access, auth));
  mountAgentDownloads(app, options.agentFiles);
  return app;
}
