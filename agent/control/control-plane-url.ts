/**
 * `--control-plane` as users give it: the app's origin (what the install
 * script knows, `https://app.example`) or the API root itself. Both become
 * the API root, so that node.json compares equal whichever form was typed.
 */
import { UsageError } from "../serve/args.ts";

const API_PREFIX = "/api/v1";

/** `https://host` -> `https://host/api/v1`; another path is taken as the API root as given. */
export function controlPlaneApiUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`invalid control plane URL "${text}" (example: https://app.example)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`invalid control plane URL "${text}": must be http(s)`);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new UsageError(`invalid control plane URL "${text}": no query, fragment or user info`);
  }
  return apiRoot(url);
}

/**
 * The API root at `url`: the origin alone means the API at `/api/v1`; any
 * other path is taken as given (a proxy may mount the API elsewhere).
 */
export function apiRoot(url: URL): string {
  const path = url.pathname.replace(/\/+$/, "");
  return `${url.origin}${path === "" ? API_PREFIX : path}`;
}
