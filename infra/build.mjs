#!/usr/bin/env node
// Bundle the agent CLI into one file: dist/pagedisk.mjs (the `pagedisk` bin).
import { chmodSync } from "node:fs";
import { build } from "esbuild";
import { NODE_BUNDLE, REQUIRE_SHIM } from "./bundle-options.mjs";

const outfile = "dist/pagedisk.mjs";
await build({
  entryPoints: ["agent/cli.ts"],
  outfile,
  ...NODE_BUNDLE,
  banner: { js: `#!/usr/bin/env node\n${REQUIRE_SHIM}` },
});
chmodSync(outfile, 0o755);
