/**
 * `pagedisk pool add|list|show|remove`: storage accounts (and containers)
 * that hold replicas. `add` (alias `register`) takes a connection string, or
 * `--account-url URL --managed-identity` for an account the control plane
 * reaches with its own identity (no key anywhere).
 */
import { type Command, Option } from "commander";
import type { Pool, PoolAuthCreate } from "../../contract/pool.ts";
import { UsageError } from "../serve/args.ts";
import { apiCommand, group } from "./command.ts";
import { formatTime, print, printFields, printJson, printTable } from "./output.ts";

/** The `pool` command group. */
export function poolCommand(): Command {
  const pool = group("pool", "register and inspect pools (storage accounts holding replicas)");

  apiCommand(
    pool
      .command("add")
      .alias("register")
      .description(
        "register a storage account container as a pool (the container is created if missing)",
      )
      .argument("<name>", "pool name (a DNS label)")
      .addOption(
        // From the environment too, so the account key need not sit in shell history.
        new Option("--connection-string <cs>", "storage account connection string").env(
          "PAGEDISK_STORAGE_CONNECTION_STRING",
        ),
      )
      .option(
        "--account-url <url>",
        "blob endpoint of the account (https://<account>.blob.core.windows.net), with --managed-identity",
      )
      .option(
        "--managed-identity",
        "the control plane reaches the account with its managed identity (needs --account-url)",
      )
      .option("--container <container>", "blob container for the replicas (default: pagedisk)"),
    async ({ api, json }, [name], opts) => {
      const created = await api.createPool({
        name: name!,
        ...(opts.container !== undefined ? { container: opts.container as string } : {}),
        auth: authOf(opts),
      });
      if (json) printJson(created);
      else
        print(
          `pool ${created.name} registered: account ${created.account}, container ${created.container}`,
        );
    },
  );

  apiCommand(pool.command("list").description("list pools"), async ({ api, json }) => {
    const list = await api.listPools();
    if (json) return printJson(list);
    printTable(
      ["name", "account", "container", "health", "usage", "created"],
      list.items.map((p) => [
        p.name,
        p.account,
        p.container,
        p.health,
        p.usage,
        formatTime(p.createdAt),
      ]),
      "no pools",
    );
  });

  apiCommand(
    pool.command("show").description("show a pool").argument("<name>", "pool name"),
    async ({ api, json }, [name]) => {
      const p = await api.getPool(name!);
      if (json) printJson(p);
      else showPool(p);
    },
  );

  apiCommand(
    pool
      .command("remove")
      .description("forget a pool that holds no replica (its container and blobs stay)")
      .argument("<name>", "pool name"),
    async ({ api, json }, [name]) => {
      await api.removePool(name!);
      // The API answers 204: with --json there is nothing to print.
      if (!json) print(`pool ${name} removed`);
    },
  );

  return pool;
}

/** The pool's auth from the flags: a connection string, or an account URL under the managed identity. */
function authOf(opts: Record<string, unknown>): PoolAuthCreate {
  const accountUrl = opts.accountUrl as string | undefined;
  if (opts.managedIdentity === true) {
    // A connection string from the environment is ignored here: the flags say which account.
    if (accountUrl === undefined)
      throw new UsageError("--managed-identity needs --account-url URL");
    return { kind: "managedIdentity", accountUrl };
  }
  if (accountUrl !== undefined)
    throw new UsageError(
      "--account-url goes with --managed-identity (a key-based pool takes --connection-string)",
    );
  const connectionString = opts.connectionString as string | undefined;
  if (connectionString === undefined)
    throw new UsageError(
      "give --connection-string (or $PAGEDISK_STORAGE_CONNECTION_STRING), or --account-url URL --managed-identity",
    );
  return { kind: "connectionString", connectionString };
}

function showPool(p: Pool): void {
  printFields([
    ["name", p.name],
    ["account", p.account],
    ["blob endpoint", p.blobEndpoint],
    ["container", p.container],
    [
      "auth",
      `${p.auth.kind} ${p.auth.kind === "connectionString" ? p.auth.connectionString : p.auth.accountUrl}`,
    ],
    ["health", p.health],
    ["usage", p.usage],
    ["created", formatTime(p.createdAt)],
  ]);
}
