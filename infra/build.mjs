#!/usr/bin/env node
// Bundle the agent CLI into one file: dist/pagedisk.mjs (the `pagedisk` bin).
import { chmodSync } from "node:fs";
import { build } from "esbuild";

const outfile = "dist/pagedisk.mjs";
await build({
  entryPoints: ["agent/cli.ts"],
  outfile,
  bundle: true,
  platform: "node",
  target: "node22",
  format: "esm",
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
  banner: {
    // Some dependencies are CommonJS and call require(); give them one.
    js: "#!/usr/bin/env node\nimport { createRequire as __pagediskRequire } from 'node:module';\nconst require = __pagediskRequire(import.meta.url);",
  },
});
chmodSync(outfile, 0o755);
