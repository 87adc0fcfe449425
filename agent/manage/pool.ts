/**
 * `pagedisk pool add|list|show|remove|release|annotate`: storage accounts
 * (and containers) that hold replicas. `add` (alias `register`) takes a
 * connection string, or `--account-url URL --managed-identity` for an
 * account the control plane reaches with its own identity (no key
 * anywhere). `release` and `annotate` replace a pool (pool-release.ts).
 */
import { type Command, Option } from "commander";
import type { Pool, PoolAuthCreate } from "../../contract/pool.ts";
import { UsageError } from "../serve/args.ts";
import { apiCommand, group } from "./command.ts";
import { formatTime, print, printFields, printJson, printTable } from "./output.ts";
import {
  annotationsOf,
  asInterval,
  printRelease,
  releaseCell,
  releaseLine,
  WATCH_INTERVAL_SECONDS,
  watchRelease,
} from "./pool-release.ts";

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
      ["name", "account", "container", "health", "usage", "release", "created"],
      list.items.map((p) => [
        p.name,
        p.account,
        p.container,
        p.health,
        p.usage,
        releaseCell(p),
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

  apiCommand(
    pool
      .command("release")
      .description(
        "move every replica off the pool (usage RELEASING, then RELEASED; FAILED when one cannot move)",
      )
      .argument("<name>", "pool name")
      .option("--watch", "follow the release until RELEASED (exit 0) or FAILED (exit 1)")
      .option(
        "--interval <seconds>",
        `seconds between two looks with --watch (default ${WATCH_INTERVAL_SECONDS})`,
        asInterval,
      ),
    async ({ api, json }, [name], opts) => {
      const released = await api.releasePool(name!);
      if (opts.watch === true) {
        const interval = (opts.interval as number | undefined) ?? WATCH_INTERVAL_SECONDS;
        process.exitCode = await watchRelease(api, released, json, interval);
        return;
      }
      if (json) return printJson(released);
      print(`pool ${released.name}: ${releaseLine(released)}`);
      printRelease(released);
    },
  );

  apiCommand(
    pool
      .command("annotate")
      .description(
        "set pool annotations: removal=ready, health=bad|suspect, action=add|remove; key- removes one",
      )
      .argument("<name>", "pool name")
      .argument("<annotation...>", "key=value to set, key- to remove"),
    async ({ api, json }, [name, ...words]) => {
      const patch = annotationsOf(words);
      const annotated = await api.annotatePool(name!, patch);
      if (json) return printJson(annotated);
      print(
        `pool ${annotated.name} annotated: ${formatAnnotations(annotated)}; usage ${annotated.usage}`,
      );
    },
  );

  return pool;
}

/** `removal=ready,health=bad`, `-` when none. */
function formatAnnotations(p: Pool): string {
  const pairs = Object.entries(p.annotations).map(([k, v]) => `${k}=${String(v)}`);
  return pairs.length === 0 ? "-" : pairs.join(",");
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
    ["health since", formatTime(p.healthSince)],
    ["health reason", p.healthReason ?? "-"],
    ["usage", p.usage],
    ["annotations", formatAnnotations(p)],
    ["created", formatTime(p.createdAt)],
  ]);
  printRelease(p);
}
