/**
 * Where the management CLI finds the control plane: flags, then
 * `PAGEDISK_API_URL` / `PAGEDISK_API_KEY`, then `.pagedisk/local.json`
 * (written by `npm start`) in the current directory or the nearest parent.
 */
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { apiRoot } from "./control-plane-url.ts";

/** The API's root, e.g. `http://127.0.0.1:7071/api/v1`, and an admin key. */
export interface ApiConfig {
  apiUrl: string;
  apiKey: string;
}

export interface ApiConfigSources {
  flags?: { apiUrl?: string | undefined; apiKey?: string | undefined };
  env?: Record<string, string | undefined>;
  /** Where the search for `.pagedisk/local.json` starts. */
  cwd?: string;
}

/** No URL or key could be found, or the one found is malformed. Nothing was sent. */
export class ApiConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ApiConfigError";
  }
}

const LOCAL_STATE = join(".pagedisk", "local.json");

/** Resolve the URL and key; throws `ApiConfigError` with what to set when one is missing. */
export async function resolveApiConfig(sources: ApiConfigSources = {}): Promise<ApiConfig> {
  const env = sources.env ?? process.env;
  let apiUrl = sources.flags?.apiUrl || env.PAGEDISK_API_URL || undefined;
  let apiKey = sources.flags?.apiKey || env.PAGEDISK_API_KEY || undefined;

  if (apiUrl === undefined || apiKey === undefined) {
    const local = await findLocalState(sources.cwd ?? process.cwd());
    if (local) {
      // The saved key belongs to the saved URL: never send it to another server.
      if (apiUrl === undefined) {
        apiUrl = local.state.apiUrl;
        apiKey ??= local.state.adminKey;
      } else if (apiKey === undefined && normalise(apiUrl) === normalise(local.state.apiUrl)) {
        apiKey = local.state.adminKey;
      }
    }
  }
  if (apiUrl === undefined) {
    throw new ApiConfigError(
      "no control plane configured: set PAGEDISK_API_URL and PAGEDISK_API_KEY, pass --api-url and --api-key, or run `npm start`, which writes .pagedisk/local.json",
    );
  }
  if (apiKey === undefined) {
    throw new ApiConfigError(`no API key for ${apiUrl}: set PAGEDISK_API_KEY or pass --api-key`);
  }
  return { apiUrl: normalise(apiUrl), apiKey };
}

/** `text` as an API root (`apiRoot()`); ApiConfigError when it is no http(s) URL. */
function normalise(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ApiConfigError(`invalid API URL "${text}" (example: http://127.0.0.1:7071/api/v1)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ApiConfigError(`invalid API URL "${text}": must be http(s)`);
  }
  return apiRoot(url);
}

interface FoundState {
  file: string;
  state: { apiUrl: string; adminKey: string };
}

/** The nearest `.pagedisk/local.json` from `dir` upwards. */
async function findLocalState(dir: string): Promise<FoundState | undefined> {
  for (let at = resolve(dir); ; at = dirname(at)) {
    const file = join(at, LOCAL_STATE);
    const text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
      // Unreadable (not merely absent) is worth telling: the user expects it to be used.
      if (err.code === "ENOENT" || err.code === "ENOTDIR") return undefined;
      throw new ApiConfigError(`cannot read ${file}: ${err.message}`);
    });
    if (text !== undefined) return { file, state: parseState(file, text) };
    if (dirname(at) === at) return undefined;
  }
}

function parseState(file: string, text: string): FoundState["state"] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ApiConfigError(`${file} is not JSON`);
  }
  const { apiUrl, adminKey } = (parsed ?? {}) as Record<string, unknown>;
  if (typeof apiUrl !== "string" || typeof adminKey !== "string") {
    throw new ApiConfigError(`${file} must hold { "apiUrl": string, "adminKey": string }`);
  }
  return { apiUrl, adminKey };
}
