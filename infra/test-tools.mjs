#!/usr/bin/env node
// Make sure the real NBD clients the tests drive are installed. Installs the
// missing Debian packages when running as root (as CI does); otherwise prints
// the apt-get line and fails, so no test can pass without its tool.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** binary -> Debian package that ships it (shared with test/harness/tools.ts) */
const TOOLS = JSON.parse(readFileSync(new URL("./test-tools.json", import.meta.url), "utf8"));

function have(bin) {
  return spawnSync("sh", ["-c", `command -v ${bin} || test -x /usr/sbin/${bin} || test -x /sbin/${bin}`], { stdio: "ignore" }).status === 0;
}

const missing = Object.entries(TOOLS).filter(([bin]) => !have(bin));
if (missing.length > 0) {
  const pkgs = [...new Set(missing.map(([, pkg]) => pkg))];
  const line = `apt-get install -y --no-install-recommends ${pkgs.join(" ")}`;
  if (process.getuid?.() !== 0) {
    console.error(`missing test tools: ${missing.map(([b]) => b).join(", ")}\nrun as root: apt-get update && ${line}`);
    process.exit(1);
  }
  console.error(`installing test tools: ${pkgs.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env });
  execFileSync("sh", ["-c", line], { stdio: ["ignore", "ignore", "inherit"], env });
  const still = Object.keys(TOOLS).filter((bin) => !have(bin));
  if (still.length > 0) {
    console.error(`still missing after install: ${still.join(", ")}`);
    process.exit(1);
  }
}
