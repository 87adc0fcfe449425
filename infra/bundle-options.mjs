// What both bundles (the agent's, infra/build.mjs, and the control plane's,
// infra/package.mjs) are built with: one ESM file for Node 22.

/** A require() for the CommonJS dependencies that call it. */
export const REQUIRE_SHIM =
  "import { createRequire as __pagediskRequire } from 'node:module';\nconst require = __pagediskRequire(import.meta.url);";

/** esbuild options shared by both bundles. */
export const NODE_BUNDLE = {
  bundle: true,
  platform: "node",
  target: "node22",
  format: "esm",
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
};
