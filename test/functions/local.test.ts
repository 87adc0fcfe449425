/**
 * The local control plane on a real port: it answers over HTTP, issues and
 * saves an admin key on first start (0600), and keeps it across restarts.
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalState, startLocalControlPlane } from "../../functions/local.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";

let azurite: Azurite;
let stateDir: string;

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  stateDir = await mkdtemp(join(tmpdir(), "pagedisk-local-"));
});
afterAll(async () => {
  await azurite?.dispose();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

async function start(lines: string[]) {
  return startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir,
    log: (line) => lines.push(line),
  });
}

describe("startLocalControlPlane", () => {
  let first: LocalState;

  it("serves the API on a free port and saves a new admin key, readable by the owner only", async () => {
    const lines: string[] = [];
    const local = await start(lines);
    try {
      expect(local.apiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/api\/v1$/);
      const doc = await fetch(`${local.apiUrl}/openapi.json`);
      expect(doc.status).toBe(200);
      expect(((await doc.json()) as { openapi: string }).openapi).toBe("3.0.3");

      const file = join(stateDir, "local.json");
      first = JSON.parse(await readFile(file, "utf8")) as LocalState;
      expect(first).toEqual({ apiUrl: local.apiUrl, adminKey: local.adminKey });
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(lines.join("\n")).toContain(local.adminKey);

      const pools = await fetch(`${local.apiUrl}/pools`, {
        headers: { authorization: `Bearer ${local.adminKey}` },
      });
      expect(pools.status).toBe(200);
      const anonymous = await fetch(`${local.apiUrl}/pools`);
      expect(anonymous.status).toBe(401);

      // The agent downloads sit beside the API, below /api.
      const origin = new URL(local.apiUrl).origin;
      const bundle = await fetch(`${origin}/api/agent/pagedisk.mjs`);
      expect(bundle.status).toBe(200);
      expect(bundle.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
      await bundle.arrayBuffer();
    } finally {
      await local.close();
    }
  });

  it("keeps the saved key on restart and does not print it again", async () => {
    const lines: string[] = [];
    const local = await start(lines);
    try {
      expect(local.adminKey).toBe(first.adminKey);
      expect(lines.join("\n")).not.toContain(local.adminKey);
      const saved = JSON.parse(await readFile(join(stateDir, "local.json"), "utf8")) as LocalState;
      expect(saved).toEqual({ apiUrl: local.apiUrl, adminKey: first.adminKey });
      const pools = await fetch(`${local.apiUrl}/pools`, {
        headers: { authorization: `Bearer ${local.adminKey}` },
      });
      expect(pools.status).toBe(200);
    } finally {
      await local.close();
    }
  });

  it("refuses to start without a registry connection string", async () => {
    await expect(
      startLocalControlPlane({ env: {}, port: 0, stateDir, log: () => {} }),
    ).rejects.toThrow(/PAGEDISK_REGISTRY_CONNECTION_STRING/);
  });
});
