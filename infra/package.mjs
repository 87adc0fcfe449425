#!/usr/bin/env node
// `npm run package`: dist/pagedisk-functions.zip, the control plane as the
// Azure Functions host runs it (Flex Consumption, Node 22), with nothing to
// install or build on the host:
//
//   host.json                 the repository's (route prefix `api`, extension bundle)
//   package.json              "type": "module", "main" naming the entry (how the
//                             Node v4 programming model finds its functions)
//   dist/functions/index.mjs  functions/index.ts and every dependency, @azure/functions
//                             included, in one ESM file
//   dist/pagedisk.mjs         the agent bundle served at /api/agent/pagedisk.mjs
//   infra/install-agent.sh    the install script served at /api/agent/install.sh
//
// The last two sit where they sit in the repository, so that the defaults of
// functions/routes/agent-download.ts (two levels above the entry's folder)
// find them in the zip as they do in a checkout; no setting is needed.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { build } from "esbuild";
import { NODE_BUNDLE, REQUIRE_SHIM } from "./bundle-options.mjs";

const repository = resolve(import.meta.dirname, "..");
const staging = join(repository, "dist", "functions-package");
const zipFile = join(repository, "dist", "pagedisk-functions.zip");
const entry = "dist/functions/index.mjs";

// The agent bundle first: build.mjs writes it relative to the working directory.
process.chdir(repository);
await import("./build.mjs");

rmSync(staging, { recursive: true, force: true });
rmSync(zipFile, { force: true });

await build({
  entryPoints: ["functions/index.ts"],
  outfile: join(staging, entry),
  ...NODE_BUNDLE,
  // Not a package: the Functions worker hands it to @azure/functions through require().
  external: ["@azure/functions-core"],
  // @azure/functions requires the worker's core API too.
  banner: { js: REQUIRE_SHIM },
});

const project = JSON.parse(readFileSync("package.json", "utf8"));
writeJson(join(staging, "package.json"), {
  name: `${project.name}-functions`,
  version: project.version,
  description: "pagedisk control plane for Azure Functions (built by npm run package)",
  private: true,
  license: project.license,
  type: "module",
  main: entry,
  engines: project.engines,
});
copyInto("host.json");
copyInto("dist/pagedisk.mjs");
copyInto("infra/install-agent.sh");
chmodSync(join(staging, "infra/install-agent.sh"), 0o755);

// -X leaves out extra file attributes, so the same files give the same zip.
try {
  execFileSync("zip", ["-q", "-r", "-X", zipFile, "."], { cwd: staging, stdio: "inherit" });
} catch (err) {
  if (err.code === "ENOENT") {
    console.error("npm run package needs the zip command (Debian/Ubuntu: apt-get install zip)");
    process.exit(1);
  }
  throw err;
}
console.log(`${relative(repository, zipFile)}: deploy it with az functionapp deployment source config-zip --src ${relative(repository, zipFile)} ...`);

function copyInto(path) {
  const target = join(staging, path);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(path, target);
}

function writeJson(path, value) {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}
