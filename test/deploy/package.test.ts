/**
 * `npm run package`: the zip holds what the Functions host needs and nothing
 * to install, and the app in it, unpacked into an empty folder and loaded
 * the way the Node.js worker loads it (functions-host.ts), registers the
 * HTTP trigger and the sweep timer, answers HTTP through the library's own
 * proxy, serves the agent bundle and install script packed beside it, and
 * sweeps a registry in Azurite.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SWEEP_SCHEDULE } from "../../functions/index.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import type { HostPlan, HostReport } from "./functions-host.ts";

const run = promisify(execFile);
const REPOSITORY = resolve(import.meta.dirname, "..", "..");
const ZIP = join(REPOSITORY, "dist", "pagedisk-functions.zip");
const HOST = join(import.meta.dirname, "functions-host.ts");

const PUBLIC_HOST = "pagedisk-test.azurewebsites.net";
const PLAN: HostPlan = {
  publicHost: PUBLIC_HOST,
  http: [
    { method: "GET", path: "/api/v1/openapi.json" },
    { method: "GET", path: "/api/agent/pagedisk.mjs" },
    { method: "GET", path: "/api/agent/install.sh" },
    { method: "GET", path: "/api/v1/pools" },
  ],
  timerRuns: 2,
};

let azurite: Azurite;
let appDir: string;
let files: string[];
let report: HostReport;

beforeAll(async () => {
  await run(process.execPath, [join(REPOSITORY, "infra", "package.mjs")], { cwd: REPOSITORY });
  appDir = await mkdtemp(join(tmpdir(), "pagedisk-package-"));
  await run("unzip", ["-q", ZIP, "-d", appDir]);
  files = (await run("unzip", ["-Z1", ZIP])).stdout.split("\n").filter((f) => f && !f.endsWith("/"));

  azurite = await startAzurite({ table: true, inMemory: true });
  const env: Record<string, string | undefined> = {
    ...process.env,
    PAGEDISK_REGISTRY_CONNECTION_STRING: azurite.connectionString,
    PAGEDISK_TABLE_PREFIX: "pkg",
    PAGEDISK_ADMIN_KEY: "package-test-admin-key",
  };
  // What the zip serves must come from the zip, not from a setting.
  delete env.PAGEDISK_AGENT_BUNDLE;
  delete env.PAGEDISK_INSTALL_SCRIPT;
  const { stdout } = await run(process.execPath, [HOST, appDir, JSON.stringify(PLAN)], {
    env,
    maxBuffer: 64 * 1024 * 1024,
  });
  report = JSON.parse(stdout) as HostReport;
});

afterAll(async () => {
  await azurite?.dispose();
  if (appDir) await rm(appDir, { recursive: true, force: true });
});

describe("npm run package", () => {
  it("zips the entry, package.json, host.json and the agent downloads, and no node_modules", () => {
    expect(files).toEqual(
      expect.arrayContaining([
        "package.json",
        "host.json",
        "dist/functions/index.mjs",
        "dist/pagedisk.mjs",
        "infra/install-agent.sh",
      ]),
    );
    expect(files.filter((f) => f.startsWith("node_modules/"))).toEqual([]);
    expect(files.filter((f) => f.endsWith(".ts"))).toEqual([]);
  });

  it("names the entry in package.json main, as an ES module", async () => {
    const pkg = JSON.parse(await readFile(join(appDir, "package.json"), "utf8")) as {
      main: string;
      type: string;
    };
    expect(pkg.main).toBe("dist/functions/index.mjs");
    expect(pkg.type).toBe("module");
    expect(report.main).toBe(pkg.main);
  });

  it("carries host.json with the api route prefix and the extension bundle", async () => {
    const host = JSON.parse(await readFile(join(appDir, "host.json"), "utf8")) as {
      version: string;
      extensions: { http: { routePrefix: string } };
      extensionBundle: { id: string; version: string };
    };
    expect(host.version).toBe("2.0");
    expect(host.extensions.http.routePrefix).toBe("api");
    expect(host.extensionBundle.id).toBe("Microsoft.Azure.Functions.ExtensionBundle");
    expect(host.extensionBundle.version).toMatch(/^\[4\./);
  });

  it("packs the install script byte for byte, and the agent bundle", async () => {
    const script = await readFile(join(appDir, "infra", "install-agent.sh"));
    expect(script.equals(await readFile(join(REPOSITORY, "infra", "install-agent.sh")))).toBe(true);
    // Not compared with dist/pagedisk.mjs: anyone may rebuild that meanwhile.
    const bundle = await readFile(join(appDir, "dist", "pagedisk.mjs"), "utf8");
    expect(bundle.startsWith("#!/usr/bin/env node\n")).toBe(true);
    expect(bundle).toMatch(/\/\/# sourceMappingURL=pagedisk\.mjs\.map\s*$/);
  });
});

describe("the packaged app under the worker", () => {
  it("registers exactly the HTTP trigger and the sweep timer", () => {
    expect(report.functions.map((f) => f.name).sort()).toEqual(["api", "sweep"]);
  });

  it("registers the HTTP trigger on {*path} for every method, anonymous, with an HTTP output", () => {
    const api = report.functions.find((f) => f.name === "api")!;
    const bindings = Object.values(api.bindings);
    const trigger = bindings.find((b) => b.type === "httpTrigger");
    expect(trigger).toMatchObject({ direction: "in", route: "{*path}", authLevel: "anonymous" });
    expect((trigger!.methods as string[]).slice().sort()).toEqual(
      ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"],
    );
    expect(bindings).toContainEqual(expect.objectContaining({ type: "http", direction: "out" }));
  });

  it("registers the sweep timer on SWEEP_SCHEDULE, not run at startup", () => {
    const sweep = report.functions.find((f) => f.name === "sweep")!;
    expect(Object.values(sweep.bindings)).toEqual([
      expect.objectContaining({
        type: "timerTrigger",
        direction: "in",
        schedule: SWEEP_SCHEDULE,
        runOnStartup: false,
      }),
    ]);
  });

  it("answers the OpenAPI document through the HTTP proxy", () => {
    const [openapi] = report.http;
    expect(openapi!.status).toBe(200);
    const doc = JSON.parse(openapi!.text!) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toBe("3.0.3");
    expect(Object.keys(doc.paths)).toContain("/api/agent/pagedisk.mjs");
  });

  it("serves the agent bundle packed in the zip", async () => {
    const bundle = report.http[1]!;
    expect(bundle.status).toBe(200);
    expect(bundle.headers["content-type"]).toMatch(/^text\/javascript/);
    const packed = await readFile(join(appDir, "dist", "pagedisk.mjs"));
    expect(bundle.sha256).toBe(createHash("sha256").update(packed).digest("hex"));
  });

  it("serves the install script pointing back at the public origin", () => {
    const script = report.http[2]!;
    expect(script.status).toBe(200);
    expect(script.text).toMatch(new RegExp(`^CONTROL_PLANE_DEFAULT="https://${PUBLIC_HOST}"$`, "m"));
  });

  it("refuses an admin route without a key, with the API's error body", () => {
    const pools = report.http[3]!;
    expect(pools.status).toBe(401);
    expect(JSON.parse(pools.text!)).toMatchObject({ error: { code: expect.any(String) } });
  });

  it("runs the sweep timer against the registry", () => {
    expect(report.timers).toEqual(["ok", "ok"]);
  });

  it("logs no error on the way", () => {
    expect(report.errors).toEqual([]);
  });
});
