/**
 * Pool connection strings and account URLs: what they name, and how
 * connection strings may be shown.
 */
import { BlobServiceClient } from "@azure/storage-blob";

/** Keys whose values are secrets (Azure keys are case-insensitive). */
const SECRET_FIELDS = new Set(["accountkey", "sharedaccesssignature"]);

export interface AccountEndpoint {
  account: string;
  /** Blob service endpoint without query or trailing slash. */
  blobEndpoint: string;
}

/** Account and blob endpoint named by a connection string; throws `SyntaxError` if it names none. */
export function accountOf(connectionString: string): AccountEndpoint {
  let client: BlobServiceClient;
  try {
    client = BlobServiceClient.fromConnectionString(connectionString);
  } catch (err) {
    // The SDK's messages can quote the string back, secrets included.
    throw new SyntaxError(
      "not a usable storage connection string (needs a blob endpoint or account name, and a key or SAS)",
      {
        cause: err instanceof Error ? err.name : undefined,
      },
    );
  }
  return endpointOf(client);
}

/** Account and blob endpoint named by a blob service URL; throws `SyntaxError` if it names none. */
export function accountOfUrl(accountUrl: string): AccountEndpoint {
  const client = new BlobServiceClient(accountUrl);
  if (!client.accountName)
    throw new SyntaxError("names no storage account (https://<account>.blob.core.windows.net)");
  return endpointOf(client);
}

function endpointOf(client: BlobServiceClient): AccountEndpoint {
  const url = new URL(client.url);
  return {
    account: client.accountName,
    blobEndpoint: `${url.origin}${url.pathname}`.replace(/\/+$/, ""),
  };
}

/** A connection string's fields, names lower-cased (Azure's are case-insensitive); values may hold `=`. */
export function connectionFields(connectionString: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const part of connectionString.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return fields;
}

/**
 * Whether a connection string names a plain-HTTP endpoint (Azurite, a
 * local stack), which the Table SDK refuses unless told to allow it.
 */
export function allowsPlainHttp(connectionString: string): boolean {
  const fields = connectionFields(connectionString);
  return (
    fields.get("defaultendpointsprotocol")?.toLowerCase() === "http" ||
    fields.get("tableendpoint")?.toLowerCase().startsWith("http:") === true ||
    fields.get("usedevelopmentstorage")?.toLowerCase() === "true"
  );
}

/**
 * Whether a connection string carries an account secret: an account key, a
 * SAS, or `UseDevelopmentStorage=true` (Azurite's well-known key). Every
 * connection string the SDK can use does; only a managed-identity pool
 * holds none.
 */
export function carriesAccountSecret(connectionString: string): boolean {
  const fields = connectionFields(connectionString);
  return (
    [...SECRET_FIELDS].some((name) => fields.has(name)) ||
    fields.get("usedevelopmentstorage")?.toLowerCase() === "true"
  );
}

/** The same connection string with every secret value replaced by `***`. */
export function maskConnectionString(connectionString: string): string {
  return connectionString
    .split(";")
    .filter((part) => part.trim() !== "")
    .map((part) => {
      const eq = part.indexOf("=");
      const key = (eq < 0 ? part : part.slice(0, eq)).trim();
      return SECRET_FIELDS.has(key.toLowerCase()) || eq < 0 ? `${key}=***` : part.trim();
    })
    .join(";");
}
