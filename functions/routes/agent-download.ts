/**
 * The agent's downloads, outside the versioned API and open to anyone: they
 * hold no secret, and a VM fetches them before it has any credential
 * (`curl -fsSL https://<app>/api/agent/install.sh | sudo bash -s -- --join-token T`).
 *
 * - `GET /api/agent/pagedisk.mjs`: the agent bundle, as built.
 * - `GET /api/agent/install.sh`: the install script, with its one line
 *   `CONTROL_PLANE_DEFAULT=""` set to the origin the request came to, so
 *   that the script finds its way back here without being told.
 *
 * Each answer carries a strong ETag (SHA-256 of what is served) and
 * `If-None-Match` gets 304; HEAD is answered like GET without the body.
 * Files are read again when their size or mtime changes, so a rebuilt
 * bundle is served without a restart.
 */
import { readFile, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { createHash } from "node:crypto";
import type { Context, Hono } from "hono";
import { ApiError } from "../http/api-error.ts";
import { invalidInput } from "../http/input.ts";

/** Where the downloads live: below `/api` like the API, beside its `/v1`. */
export const AGENT_DOWNLOAD_PREFIX = "/api/agent";

/** Files served, by path on this host. */
export interface AgentFiles {
  /** The agent bundle (`PAGEDISK_AGENT_BUNDLE`). */
  bundle: string;
  /** The install script (`PAGEDISK_INSTALL_SCRIPT`). */
  installScript: string;
}

const REPOSITORY = resolve(import.meta.dirname, "..", "..");

/** The repository's own build output and script. */
export const DEFAULT_AGENT_FILES: AgentFiles = {
  bundle: resolve(REPOSITORY, "dist", "pagedisk.mjs"),
  installScript: resolve(REPOSITORY, "infra", "install-agent.sh"),
};

/** The script's placeholder line; exactly one must be there. */
const PLACEHOLDER = /^CONTROL_PLANE_DEFAULT=""$/gm;

/** What may go between double quotes in a shell script without meaning anything to the shell. */
const PLAIN_ORIGIN = /^https?:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

interface Download {
  /** `/api/agent/<name>` */
  name: string;
  operationId: string;
  summary: string;
  setting: string;
  what: string;
  contentType: string;
  path: (files: AgentFiles) => string;
  /** What is served from the file's bytes, given the request. */
  render: (bytes: Buffer, c: Context) => Buffer;
}

const DOWNLOADS: readonly Download[] = [
  {
    name: "pagedisk.mjs",
    operationId: "getAgentBundle",
    summary: "The agent bundle (one Node.js 22 file); no credential needed",
    setting: "PAGEDISK_AGENT_BUNDLE",
    what: "agent bundle",
    contentType: "text/javascript; charset=utf-8",
    path: (files) => files.bundle,
    render: (bytes) => bytes,
  },
  {
    name: "install.sh",
    operationId: "getAgentInstallScript",
    summary: "The agent's install script, pointing at this control plane; no credential needed",
    setting: "PAGEDISK_INSTALL_SCRIPT",
    what: "install script",
    contentType: "text/x-shellscript; charset=utf-8",
    path: (files) => files.installScript,
    render: (bytes, c) => withControlPlane(bytes.toString("utf8"), originOf(c)),
  },
];

/** The install script with its default control plane set to `origin`. */
export function withControlPlane(script: string, origin: string): Buffer {
  const lines = script.match(PLACEHOLDER)?.length ?? 0;
  // The script is ours: a placeholder missing or doubled is a broken build, not a bad request.
  if (lines !== 1) throw new Error(`install script has ${lines} CONTROL_PLANE_DEFAULT="" lines`);
  return Buffer.from(script.replace(PLACEHOLDER, `CONTROL_PLANE_DEFAULT="${origin}"`), "utf8");
}

/**
 * `scheme://host[:port]` of the URL the request came to. Forwarded headers
 * are not read: the URL the Functions host hands over is already the public
 * one, and locally there is no proxy. The origin ends up inside a shell
 * script, so anything but a plain host name or address is refused.
 */
function originOf(c: Context): string {
  const { origin } = new URL(c.req.url);
  if (!PLAIN_ORIGIN.test(origin)) throw invalidInput("header.host", "not a plain host name");
  return origin;
}

interface Loaded {
  key: string;
  bytes: Buffer;
}

/** Register both downloads on `app`. */
export function mountAgentDownloads(app: Hono, files: AgentFiles = DEFAULT_AGENT_FILES): void {
  // Per app, so apps serving different files in one process never mix them up.
  const cache = new Map<string, Loaded>();

  async function load(download: Download): Promise<Buffer> {
    const path = download.path(files);
    try {
      const { size, mtimeMs, ino } = await stat(path);
      const key = `${size}:${mtimeMs}:${ino}`;
      const kept = cache.get(path);
      if (kept?.key === key) return kept.bytes;
      const bytes = await readFile(path);
      cache.set(path, { key, bytes });
      return bytes;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR" && code !== "EISDIR") throw err;
      // The path stays out of the answer: anyone may ask, and it says nothing they need.
      throw new ApiError(
        "NotFound",
        `the ${download.what} is not on this control plane; set ${download.setting} to its path`,
        { setting: download.setting },
      );
    }
  }

  for (const download of DOWNLOADS) {
    // Hono answers HEAD with the GET handler, without the body.
    app.get(
      `${AGENT_DOWNLOAD_PREFIX}/${download.name}`,
      async function serveAgentDownload(c) {
        const body = download.render(await load(download), c);
        const etag = `"${createHash("sha256").update(body).digest("base64url")}"`;
        const headers = {
          etag,
          // Agents upgrade by downloading again: always ask whether it changed.
          "cache-control": "no-cache",
        };
        if (matches(c.req.header("if-none-match"), etag)) return c.body(null, 304, headers);
        return c.body(new Uint8Array(body), 200, {
          ...headers,
          "content-type": download.contentType,
        });
      },
    );
  }
}

/** `If-None-Match` (a list, or `*`) matches `etag`, compared weakly as RFC 9110 says. */
function matches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header
    .split(",")
    .map((tag) => tag.trim().replace(/^W\//, ""))
    .some((tag) => tag === "*" || tag === etag);
}

/** The downloads in the OpenAPI document, which describes only JSON operations by itself. */
export function agentDownloadPaths(): Record<string, Record<string, Record<string, unknown>>> {
  return Object.fromEntries(
    DOWNLOADS.map((download) => [
      `${AGENT_DOWNLOAD_PREFIX}/${download.name}`,
      {
        get: {
          operationId: download.operationId,
          summary: download.summary,
          parameters: [
            { name: "If-None-Match", in: "header", required: false, schema: { type: "string" } },
          ],
          responses: {
            200: {
              description: `the ${download.what}`,
              headers: { ETag: { schema: { type: "string" } } },
              content: {
                [download.contentType.split(";")[0]!]: { schema: { type: "string" } },
              },
            },
            304: { description: "unchanged since the ETag given in If-None-Match" },
            404: {
              description: `error code NotFound: the file is missing (${download.setting})`,
              content: {
                "application/json": { schema: { $ref: "#/components/schemas/ErrorBody" } },
              },
            },
          },
        },
      },
    ]),
  );
}
