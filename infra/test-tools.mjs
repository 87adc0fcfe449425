#!/usr/bin/env node
// Make sure the real NBD clients the tests drive are installed. Installs the
// missing Debian packages when running as root (as CI does); otherwise prints
// the apt-get line and fails, so no test can pass without its tool.
import { execFileSync } from "node:child_process";
import { TOOL_PACKAGES, toolPath } from "../test/harness/tools.ts";

/** Whether the tests will find `bin`: looked up exactly as they look it up. */
function have(bin) {
  try {
    toolPath(bin);
    return true;
  } catch {
    return false;
  }
}

const missing = Object.entries(TOOL_PACKAGES).filter(([bin]) => !have(bin));
if (missing.length > 0) {
  const install = ["install", "-y", "--no-install-recommends", ...new Set(missing.map(([, pkg]) => pkg))];
  const line = `apt-get ${install.join(" ")}`;
  if (process.getuid?.() !== 0) {
    console.error(`missing test tools: ${missing.map(([b]) => b).join(", ")}\nrun as root: apt-get update && ${line}`);
    process.exit(1);
  }
  console.error(`installing test tools: ${install.slice(3).join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env });
  execFileSync("apt-get", install, { stdio: ["ignore", "ignore", "inherit"], env });
  const still = Object.keys(TOOL_PACKAGES).filter((bin) => !have(bin));
  if (still.length > 0) {
    console.error(`still missing after install: ${still.join(", ")}`);
    process.exit(1);
  }
}
