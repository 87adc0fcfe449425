/**
 * The agent's downloads, in process over Azurite: `/api/agent/pagedisk.mjs`
 * and `/api/agent/install.sh` answer anyone, with their content types, an
 * ETag that `If-None-Match` turns into 304, HEAD without a body, the install
 * script pointing at the origin it was fetched from, a 404 naming the
 * setting when a file is missing, and new content once a file changes.
 */
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../../functions/app.ts";
import {
  type AgentFiles,
  DEFAULT_AGENT_FILES,
  withControlPlane,
} from "../../../functions/routes/agent-download.ts";
import { settingsFrom } from "../../../functions/settings.ts";
import { type ControlPlaneFixture, errorOf, startControlPlane } from "../fixture.ts";

const ORIGIN = "https://pagedisk-test.azurewebsites.net";
const SCRIPT = [
  "#!/usr/bin/env bash",
  "set -euo pipefail",
  'CONTROL_PLANE_DEFAULT=""',
  'CONTROL_PLANE=${CONTROL_PLANE:-$CONTROL_PLANE_DEFAULT}',
  "",
].join("\n");

let fx: ControlPlaneFixture;
let dir: string;
let files: AgentFiles;
let app: Hono;
const reported: unknown[] = [];

const sha256 = (data: string | Buffer) =>
  `"${createHash("sha256").update(data).digest("base64url")}"`;

beforeAll(async () => {
  fx = await startControlPlane();
  dir = await mkdtemp(join(tmpdir(), "pagedisk-download-"));
  files = { bundle: join(dir, "pagedisk.mjs"), installScript: join(dir, "install-agent.sh") };
  await writeFile(files.bundle, "#!/usr/bin/env node\nconsole.log('agent 1');\n");
  await writeFile(files.installScript, SCRIPT);
  app = createApp({ registry: fx.registry, agentFiles: files, report: (e) => reported.push(e) });
});
afterAll(async () => {
  await fx?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("GET /api/agent/install.sh", () => {
  it("serves the script with the origin it was fetched from as its default control plane", async () => {
    const res = await app.request(`${ORIGIN}/api/agent/install.sh`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/x-shellscript; charset=utf-8");
    const text = await res.text();
    const expected = `CONTROL_PLANE_DEFAULT="${ORIGIN}"`;
    expect(text).toBe(SCRIPT.replace('CONTROL_PLANE_DEFAULT=""', expected));
    expect(res.headers.get("etag")).toBe(sha256(text));

    const local = await (await app.request("http://127.0.0.1:7071/api/agent/install.sh")).text();
    expect(local).toContain('CONTROL_PLANE_DEFAULT="http://127.0.0.1:7071"\n');
  });

  it("answers If-None-Match with 304 for the same origin only", async () => {
    const etag = (await app.request(`${ORIGIN}/api/agent/install.sh`)).headers.get("etag")!;
    const same = await app.request(`${ORIGIN}/api/agent/install.sh`, {
      headers: { "if-none-match": etag },
    });
    expect(same.status).toBe(304);
    expect(same.headers.get("etag")).toBe(etag);
    expect(await same.text()).toBe("");
    // Another origin is another script.
    const other = await app.request("https://other.example.net/api/agent/install.sh", {
      headers: { "if-none-match": etag },
    });
    expect(other.status).toBe(200);
    expect(other.headers.get("etag")).not.toBe(etag);
  });

  it("refuses a host that is not a plain name, since it would land inside the script", async () => {
    for (const host of ["a$(reboot)b.example", "a`id`b", "x'y"]) {
      const err = await errorOf(await app.request(`http://${host}/api/agent/install.sh`), 400);
      expect(err.code).toBe("InvalidRequest");
    }
  });

  it("needs exactly one placeholder line", () => {
    expect(withControlPlane(SCRIPT, ORIGIN).toString()).toContain(`"${ORIGIN}"`);
    expect(() => withControlPlane("#!/bin/sh\n", ORIGIN)).toThrow(/0 CONTROL_PLANE_DEFAULT/);
    expect(() =>
      withControlPlane('CONTROL_PLANE_DEFAULT=""\nCONTROL_PLANE_DEFAULT=""\n', ORIGIN),
    ).toThrow(/2 CONTROL_PLANE_DEFAULT/);
  });
});

describe("GET /api/agent/pagedisk.mjs", () => {
  it("serves the bundle as it is, to anyone, with a strong ETag", async () => {
    const res = await app.request(`${ORIGIN}/api/agent/pagedisk.mjs`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    const bytes = await readFile(files.bundle);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes);
    expect(res.headers.get("etag")).toBe(sha256(bytes));
    expect(res.headers.get("cache-control")).toBe("no-cache");
  });

  it("answers 304 to a matching tag in a list, weak or strong, and to *", async () => {
    const etag = sha256(await readFile(files.bundle));
    for (const header of [etag, `"other", W/${etag}`, "*"]) {
      const res = await app.request(`${ORIGIN}/api/agent/pagedisk.mjs`, {
        headers: { "if-none-match": header },
      });
      expect(res.status, header).toBe(304);
    }
    const stale = await app.request(`${ORIGIN}/api/agent/pagedisk.mjs`, {
      headers: { "if-none-match": '"stale"' },
    });
    expect(stale.status).toBe(200);
  });

  it("answers HEAD with the headers of GET and no body", async () => {
    const get = await app.request(`${ORIGIN}/api/agent/pagedisk.mjs`);
    const head = await app.request(`${ORIGIN}/api/agent/pagedisk.mjs`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("etag")).toBe(get.headers.get("etag"));
    expect(head.headers.get("content-type")).toBe(get.headers.get("content-type"));
    expect(await head.text()).toBe("");
  });

  it("serves a rebuilt bundle without a restart", async () => {
    const before = (await app.request(`${ORIGIN}/api/agent/pagedisk.mjs`)).headers.get("etag");
    await writeFile(files.bundle, "#!/usr/bin/env node\nconsole.log('agent 2, rebuilt');\n");
    const res = await app.request(`${ORIGIN}/api/agent/pagedisk.mjs`);
    expect(await res.text()).toContain("agent 2, rebuilt");
    expect(res.headers.get("etag")).not.toBe(before);
  });
});

describe("missing files", () => {
  it("are 404 with the error body naming the setting, and nothing is reported", async () => {
    const nowhere = createApp({
      registry: fx.registry,
      agentFiles: { bundle: join(dir, "none.mjs"), installScript: join(dir, "none.sh") },
      report: (e) => reported.push(e),
    });
    for (const [path, setting] of [
      ["/api/agent/pagedisk.mjs", "PAGEDISK_AGENT_BUNDLE"],
      ["/api/agent/install.sh", "PAGEDISK_INSTALL_SCRIPT"],
    ] as const) {
      const err = await errorOf(await nowhere.request(`${ORIGIN}${path}`), 404);
      expect(err.code).toBe("NotFound");
      expect(err.message).toContain(setting);
      expect(err.details).toEqual({ setting });
      expect(err.message).not.toContain(dir);
    }
    expect(reported).toEqual([]);
  });
});

describe("settings", () => {
  const base = { PAGEDISK_REGISTRY_CONNECTION_STRING: "UseDevelopmentStorage=true" };

  it("default to the repository's bundle and install script", () => {
    const { agentFiles } = settingsFrom(base);
    expect(agentFiles).toEqual(DEFAULT_AGENT_FILES);
    const repository = resolve(import.meta.dirname, "..", "..", "..");
    expect(agentFiles).toEqual({
      bundle: join(repository, "dist", "pagedisk.mjs"),
      installScript: join(repository, "infra", "install-agent.sh"),
    });
  });

  it("take PAGEDISK_AGENT_BUNDLE and PAGEDISK_INSTALL_SCRIPT, resolved at start", () => {
    const { agentFiles } = settingsFrom({
      ...base,
      PAGEDISK_AGENT_BUNDLE: "/opt/pagedisk/pagedisk.mjs",
      PAGEDISK_INSTALL_SCRIPT: "relative/install.sh",
    });
    expect(agentFiles).toEqual({
      bundle: "/opt/pagedisk/pagedisk.mjs",
      installScript: resolve("relative/install.sh"),
    });
  });
});
