/**
 * `pagedisk token create|list|revoke`: join tokens handed to new VMs.
 */
import type { Command } from "commander";
import { asSeconds } from "./args.ts";
import { apiCommand, group } from "./command.ts";
import { formatAge, formatTime, print, printFields, printJson, printTable } from "./output.ts";

/** The `token` command group. */
export function tokenCommand(): Command {
  const token = group("token", "create, list and revoke join tokens");

  apiCommand(
    token
      .command("create")
      .description("create a join token; the token is shown this once")
      .option(
        "--expires <duration>",
        "lifetime, e.g. 24h or 90m; 1m to 168h (default: 24h)",
        asSeconds,
      )
      .option("--description <text>", "what the token is for"),
    async ({ api, json }, _args, opts) => {
      const issued = await api.createToken({
        ...(opts.expires !== undefined ? { expiresInSeconds: opts.expires as number } : {}),
        ...(opts.description !== undefined ? { description: opts.description as string } : {}),
      });
      if (json) return printJson(issued);
      printFields([
        ["id", issued.id],
        ["expires", formatTime(issued.expiresAt)],
        ["token", issued.token],
      ]);
    },
  );

  apiCommand(
    token.command("list").description("list join tokens (never their secrets)"),
    async ({ api, json }) => {
      const list = await api.listTokens();
      if (json) return printJson(list);
      const now = Date.now();
      printTable(
        ["id", "created", "expires", "description"],
        list.items.map((t) => [
          t.id,
          formatTime(t.createdAt),
          Date.parse(t.expiresAt) <= now ? "expired" : formatAge(t.expiresAt, now),
          t.description ?? "-",
        ]),
        "no join tokens",
      );
    },
  );

  apiCommand(
    token
      .command("revoke")
      .description("revoke a join token; nodes that joined with it keep their credentials")
      .argument("<id>", "token id (16 hex digits)"),
    async ({ api, json }, [id]) => {
      await api.revokeToken(id!);
      // The API answers 204: with --json there is nothing to print.
      if (!json) print(`join token ${id} revoked`);
    },
  );

  return token;
}
