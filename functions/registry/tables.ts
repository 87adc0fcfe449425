/**
 * The registry: one Table Storage table per kind of record.
 *
 * | table        | PartitionKey        | RowKey            |
 * |--------------|---------------------|-------------------|
 * | pools        | pool name           | `pool`            |
 * | volumes      | volume name         | `volume`          |
 * | nodes        | node name           | `node`            |
 * | events       | inverted day        | inverted ms + id  |
 * | credentials  | kind (`admin-key`)  | key id            |
 *
 * One partition per pool, volume and node keeps their writes independent;
 * events are bucketed by day so that key order is newest first.
 */
import { TableClient } from "@azure/data-tables";
import type { TokenCredential } from "@azure/identity";

export interface Registry {
  readonly pools: TableClient;
  readonly volumes: TableClient;
  readonly nodes: TableClient;
  readonly events: TableClient;
  readonly credentials: TableClient;
}

export const TABLES = ["pools", "volumes", "nodes", "events", "credentials"] as const;

/** Azurite and local stacks speak plain HTTP; the SDK refuses it unless told the account really is there. */
const PLAIN_HTTP =
  /(?:^|;)\s*(?:DefaultEndpointsProtocol\s*=\s*http\s*(?:;|$)|TableEndpoint\s*=\s*http:|UseDevelopmentStorage\s*=\s*true)/i;

export interface RegistryOptions {
  /**
   * Prefix of every table name (letters and digits), so that several
   * registries can share one account.
   */
  prefix?: string;
}

/**
 * The registry's account reached with a token credential (Entra ID, e.g.
 * the Function App's managed identity) instead of a connection string.
 */
export interface RegistryIdentity {
  /** Table service endpoint, e.g. `https://acct.table.core.windows.net`. */
  tableUrl: string;
  credential: TokenCredential;
}

/**
 * Open the registry over a connection string or under an identity,
 * creating missing tables.
 */
export async function openRegistry(
  account: string | RegistryIdentity,
  opts: RegistryOptions = {},
): Promise<Registry> {
  const prefix = opts.prefix ?? "";
  if (!/^[A-Za-z]?[A-Za-z0-9]*$/.test(prefix))
    throw new RangeError(`table prefix must be alphanumeric starting with a letter: ${prefix}`);
  const open = (name: string) => {
    if (typeof account !== "string")
      return new TableClient(account.tableUrl, `${prefix}${name}`, account.credential);
    return TableClient.fromConnectionString(account, `${prefix}${name}`, {
      allowInsecureConnection: PLAIN_HTTP.test(account),
    });
  };
  const registry: Registry = {
    pools: open("pools"),
    volumes: open("volumes"),
    nodes: open("nodes"),
    events: open("events"),
    credentials: open("credentials"),
  };
  // createTable ignores "already exists", so opening is idempotent.
  await Promise.all(TABLES.map((t) => registry[t].createTable()));
  return registry;
}
