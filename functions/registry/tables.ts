/**
 * The registry: one Table Storage table per kind of record, and the event
 * log's one per day.
 *
 * | table            | PartitionKey                        | RowKey            |
 * |------------------|-------------------------------------|-------------------|
 * | pools            | pool name                           | `pool`            |
 * | volumes          | volume name                         | `volume`          |
 * | nodes            | node name                           | `node`            |
 * | events<yyyymmdd> | index: `all`, or a volume/node/type | inverted ms + id  |
 * | credentials      | kind (`admin-key`)                  | key id            |
 * | control          | `sweeper`                           | `state`           |
 * | owners           | node name                           | volume name       |
 *
 * One partition per pool, volume and node keeps their writes independent.
 * The event log is the one table that grows: it gets a table per UTC day,
 * made by its first write, so that retention drops whole tables (one
 * transaction each, whatever they hold); within a day every event is
 * written to each index partition it belongs to, so that every listing is
 * a range within one partition (registry/event-layout.ts). The agents'
 * heartbeats go to the liveness table (liveness.ts), which may live in an
 * account of its own: agents write it with a SAS, and a Table SAS needs the
 * account's key.
 */
import { TableClient, TableServiceClient } from "@azure/data-tables";
import type { TokenCredential } from "@azure/identity";
import { type LivenessTable, openLiveness } from "./liveness.ts";
import { allowsPlainHttp } from "../storage/connection-string.ts";

export interface Registry {
  readonly pools: TableClient;
  readonly volumes: TableClient;
  readonly nodes: TableClient;
  readonly credentials: TableClient;
  /** Singletons of the control plane itself (sweeper-state.ts). */
  readonly control: TableClient;
  /** The volumes each node may own (owners.ts). */
  readonly owners: TableClient;
  readonly liveness: LivenessTable;
  /**
   * A table that is made when first needed rather than at opening (the
   * event log's day tables): `name` without the prefix. It may not exist.
   */
  readonly table: (name: string) => TableClient;
  /** The account's Table service, to find and delete such tables by name. */
  readonly service: TableServiceClient;
  /** Prefix of every table name; names the service lists carry it. */
  readonly prefix: string;
}

/** The tables made at opening. */
export const TABLES = ["pools", "volumes", "nodes", "credentials", "control", "owners"] as const;

/** Azurite and local stacks speak plain HTTP; the SDK refuses it unless told the account really is there. */
export interface RegistryOptions {
  /**
   * Prefix of every table name (letters and digits), so that several
   * registries can share one account.
   */
  prefix?: string;
  /**
   * Connection string (with the key) of the account that holds the
   * liveness table; the registry's own when it is reached with one.
   */
  liveness?: string;
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
      allowInsecureConnection: allowsPlainHttp(account),
    });
  };
  const livenessAccount = opts.liveness ?? (typeof account === "string" ? account : undefined);
  if (livenessAccount === undefined) {
    throw new Error(
      "the registry is reached with an identity, so the liveness table needs an account of its own, given by connection string (agents' Table SAS are signed with its key)",
    );
  }
  // One client per name for the life of the registry: each holds its own pipeline and token cache.
  const opened = new Map<string, TableClient>();
  const registry: Registry = {
    pools: open("pools"),
    volumes: open("volumes"),
    nodes: open("nodes"),
    credentials: open("credentials"),
    control: open("control"),
    owners: open("owners"),
    liveness: await openLiveness(livenessAccount, prefix),
    table: (name) => {
      let client = opened.get(name);
      if (!client) opened.set(name, (client = open(name)));
      return client;
    },
    service:
      typeof account === "string"
        ? TableServiceClient.fromConnectionString(account, {
            allowInsecureConnection: allowsPlainHttp(account),
          })
        : new TableServiceClient(account.tableUrl, account.credential),
    prefix,
  };
  // createTable ignores "already exists", so opening is idempotent.
  await Promise.all(TABLES.map((t) => registry[t].createTable()));
  return registry;
}
