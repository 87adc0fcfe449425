/**
 * Where a page blob lives and how it was named on the command line: a blob
 * URL (with or without a SAS), an Azure Storage connection string, or
 * `container/blob` relative to a connection string's blob endpoint.
 */

/** Azurite's well-known development account (public, documented by Microsoft). */
export const DEV_ACCOUNT_NAME = "devstoreaccount1";
export const DEV_ACCOUNT_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/** One blob, resolved. */
export interface BlobLocation {
  /** `scheme://host[:port]`: the key of the connection pool. */
  origin: string;
  /** Percent-encoded request path of the blob, account segment included when path-style. */
  path: string;
  account: string;
  container: string;
  blob: string;
  /** SAS query string that came with the URL, without the leading `?`. */
  sas: string | undefined;
}

/** What a connection string says about an account. */
export interface StorageAccount {
  accountName: string;
  accountKey: string | undefined;
  /** Blob service endpoint without a trailing slash, e.g. `http://127.0.0.1:10000/devstoreaccount1`. */
  blobEndpoint: string;
  /** Account or service SAS from `SharedAccessSignature=`, without `?`. */
  sas: string | undefined;
}

/** Parse an Azure Storage connection string (keys are case-insensitive, values may contain `=`). */
export function parseConnectionString(cs: string): StorageAccount {
  const fields = new Map<string, string>();
  for (const part of cs.split(";")) {
    const trimmed = part.trim();
    if (trimmed === "") continue;
    const eq = trimmed.indexOf("=");
    if (eq <= 0) throw new SyntaxError(`connection string field without '=': ${redact(trimmed)}`);
    fields.set(trimmed.slice(0, eq).toLowerCase(), trimmed.slice(eq + 1));
  }
  if (fields.get("usedevelopmentstorage")?.toLowerCase() === "true") {
    const proxy = fields.get("developmentstorageproxyuri") ?? "http://127.0.0.1";
    const base = new URL(proxy);
    return {
      accountName: DEV_ACCOUNT_NAME,
      accountKey: DEV_ACCOUNT_KEY,
      blobEndpoint: `${base.protocol}//${base.hostname}:10000/${DEV_ACCOUNT_NAME}`,
      sas: undefined,
    };
  }
  const sas = fields.get("sharedaccesssignature")?.replace(/^\?/, "");
  let blobEndpoint = fields.get("blobendpoint");
  let accountName = fields.get("accountname");
  if (!blobEndpoint) {
    if (!accountName)
      throw new SyntaxError("connection string has neither BlobEndpoint nor AccountName");
    const protocol = fields.get("defaultendpointsprotocol") ?? "https";
    const suffix = fields.get("endpointsuffix") ?? "core.windows.net";
    blobEndpoint = `${protocol}://${accountName}.blob.${suffix}`;
  }
  blobEndpoint = blobEndpoint.replace(/\/+$/, "");
  accountName ??= accountFromUrl(new URL(blobEndpoint)).account;
  const accountKey = fields.get("accountkey");
  if (!accountKey && !sas)
    throw new SyntaxError("connection string has neither AccountKey nor SharedAccessSignature");
  return { accountName, accountKey, blobEndpoint, sas };
}

/** Split a blob URL into origin, account, container, blob and SAS. */
export function parseBlobUrl(url: string): BlobLocation {
  const u = new URL(url);
  if (u.protocol !== "https:" && u.protocol !== "http:") {
    throw new SyntaxError(`blob URL must be http(s), got ${u.protocol}`);
  }
  const { account, pathStyle } = accountFromUrl(u);
  const segments = u.pathname.slice(1).split("/");
  const rest = pathStyle ? segments.slice(1) : segments;
  const container = rest[0] ?? "";
  const blob = rest.slice(1).join("/");
  if (container === "" || blob === "") {
    throw new SyntaxError(`blob URL needs a container and a blob name: ${u.origin}${u.pathname}`);
  }
  return {
    origin: u.origin,
    path: u.pathname,
    account,
    container: decodeURIComponent(container),
    blob: decodeURIComponent(blob),
    sas: u.search.length > 1 ? u.search.slice(1) : undefined,
  };
}

/**
 * Resolve what the user typed: a full blob URL, or `container/blob` under the
 * connection string's blob endpoint. With both, the URL names the blob and
 * the connection string supplies the credential, so their accounts must agree.
 */
export function resolveBlob(spec: string, account?: StorageAccount): BlobLocation {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) {
    const loc = parseBlobUrl(spec);
    if (account && account.accountName !== loc.account) {
      throw new SyntaxError(
        `blob URL is in account ${loc.account} but the connection string is for ${account.accountName}`,
      );
    }
    return loc;
  }
  if (!account)
    throw new SyntaxError(`'${spec}' is not a URL; give a connection string to resolve it`);
  const slash = spec.indexOf("/");
  if (slash <= 0 || slash === spec.length - 1) {
    throw new SyntaxError(`expected container/blob, got '${spec}'`);
  }
  const container = spec.slice(0, slash);
  const blob = spec.slice(slash + 1);
  const base = new URL(account.blobEndpoint);
  const encoded = [container, ...blob.split("/")].map(encodeURIComponent).join("/");
  return {
    origin: base.origin,
    path: `${base.pathname.replace(/\/+$/, "")}/${encoded}`,
    account: account.accountName,
    container,
    blob,
    sas: account.sas,
  };
}

/**
 * Host-style URLs (`account.blob.core.windows.net`) carry the account in the
 * host; path-style ones (Azurite, IP addresses, localhost) in the first path
 * segment.
 */
function accountFromUrl(u: URL): { account: string; pathStyle: boolean } {
  const host = u.hostname;
  const isIp = /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.startsWith("[");
  if (isIp || host === "localhost" || !host.includes(".")) {
    const first = u.pathname.split("/")[1];
    if (!first) throw new SyntaxError(`path-style URL without an account segment: ${u.origin}`);
    return { account: decodeURIComponent(first), pathStyle: true };
  }
  return { account: host.split(".")[0]!, pathStyle: false };
}

/** Keep secrets out of error messages. */
function redact(field: string): string {
  return field.length > 12 ? `${field.slice(0, 12)}…` : field;
}
