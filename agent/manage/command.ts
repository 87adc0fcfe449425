/**
 * The frame every management command shares: its group (`pagedisk volume`,
 * `pagedisk pool`...), the `--json`, `--api-url` and `--api-key` options, and
 * one place that turns failures into a stderr line and an exit code:
 *
 * - 0: done
 * - 1: the API refused or failed (`pagedisk: <code>: <message>`), or could not be reached
 * - 2: the command line is wrong or no API is configured; nothing was sent
 *
 * Never a stack trace: these are messages for the person at the terminal.
 */
import { Command } from "commander";
import { ApiClient, ApiClientError } from "../control/api-client.ts";
import { ApiConfigError, resolveApiConfig } from "../control/api-config.ts";
import { UsageError } from "../serve/args.ts";

export const EXIT = { ok: 0, api: 1, usage: 2 } as const;

/**
 * A command group. Its settings (exit codes, error format) are inherited by
 * the subcommands made with `.command()` on it, so make those afterwards.
 */
export function group(name: string, description: string): Command {
  return new Command(name)
    .description(description)
    .showHelpAfterError("(add --help for usage)")
    .configureOutput({
      outputError: (text, write) => write(`pagedisk: usage: ${text.replace(/^error: /, "")}`),
    })
    .exitOverride((err) => {
      // commander exits 1 on a bad command line; 1 is for the API's refusals here.
      process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
    });
}

/** What an action gets: the client, and whether to print JSON. */
export interface Ctx {
  api: ApiClient;
  json: boolean;
}

type Handler = (ctx: Ctx, args: string[], opts: Record<string, unknown>) => Promise<void>;

/** Add the connection and output options, and run `handler` with a client when called. */
export function apiCommand(cmd: Command, handler: Handler): Command {
  return cmd
    .option("--json", "print the API's JSON")
    .option(
      "--api-url <url>",
      "control plane API URL (default: $PAGEDISK_API_URL, .pagedisk/local.json)",
    )
    .option("--api-key <key>", "admin key (default: $PAGEDISK_API_KEY, .pagedisk/local.json)")
    .action(async (...raw: unknown[]) => {
      const self = raw.at(-1) as Command;
      const opts = self.opts();
      try {
        const config = await resolveApiConfig({
          flags: {
            apiUrl: opts.apiUrl as string | undefined,
            apiKey: opts.apiKey as string | undefined,
          },
        });
        await handler({ api: new ApiClient(config), json: opts.json === true }, self.args, opts);
      } catch (err) {
        process.exitCode = report(err);
      }
    });
}

/** One line on stderr for `err`; the exit code it means. */
function report(err: unknown): number {
  if (err instanceof ApiClientError) {
    process.stderr.write(`pagedisk: ${err.code}: ${err.message}\n`);
    return EXIT.api;
  }
  if (err instanceof UsageError) {
    process.stderr.write(`pagedisk: usage: ${err.message}\n`);
    return EXIT.usage;
  }
  if (err instanceof ApiConfigError) {
    process.stderr.write(`pagedisk: config: ${err.message}\n`);
    return EXIT.usage;
  }
  // A bug here: say what broke, once, without a stack the user cannot act on.
  process.stderr.write(`pagedisk: internal: ${err instanceof Error ? err.message : String(err)}\n`);
  return EXIT.api;
}
