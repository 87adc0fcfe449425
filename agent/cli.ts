/**
 * Entry of the `pagedisk` binary: agent commands and management commands.
 */
import { Command, Option } from "commander";
import { agentCommand } from "./control/command.ts";
import { AGENT_VERSION } from "./control/version.ts";
import { openBinder } from "./host/open-binder.ts";
import { checkRelaySpec, runRelay } from "./host/relay.ts";
import { statusApp } from "./status/app.ts";
import { listenStatus } from "./status/listen.ts";
import { createLogger } from "./log.ts";
import { asSize, usage } from "./manage/args.ts";
import { addManagementCommands } from "./manage/index.ts";
import { LIMIT_FLAGS, limitsFromFlags, parseDuration, UsageError } from "./serve/args.ts";
import { EXIT, serve } from "./serve/serve.ts";

const asDuration = (text: string): number => usage(() => parseDuration(text));

const program = new Command();
program
  .name("pagedisk")
  .description("Azure page blobs as Linux block devices")
  .version(AGENT_VERSION)
  .showHelpAfterError();

const serveCommand = program
  .command("serve")
  .description("export one page blob (or memory:SIZE) over NBD, with no control plane")
  .argument("<target>", "page blob URL (with a SAS, or with --connection-string) or memory:SIZE")
  .requiredOption("--listen <address>", "unix:PATH or tcp:HOST:PORT")
  .option("--create", "create the page blob first (needs --size)")
  .option("--size <size>", "size for --create, e.g. 8GiB", asSize)
  .option("--lease <mode>", "auto (take and release an infinite lease), none, or a lease id")
  .option("--read-only", "export read-only")
  .option("--export-name <name>", "NBD export name (default: the blob name)")
  .addOption(
    new Option("--connection-string <cs>", "storage connection string").env(
      "PAGEDISK_STORAGE_CONNECTION_STRING",
    ),
  )
  .option("--throttle-pause <duration>", "pause of new I/O after a throttle response", asDuration)
  .option("--deadline <duration>", "how long a request retries before the volume fails", asDuration);
for (const flag of LIMIT_FLAGS) {
  serveCommand.option(flag.flags, flag.help, (text: string) => usage(() => flag.parse(text)));
}
serveCommand.action(async (target: string, o: Record<string, unknown>) => {
    const log = createLogger({ name: "pagedisk-serve" });
    try {
      const code = await serve(target, {
        listen: o.listen as string,
        create: o.create === true,
        ...(o.size !== undefined ? { size: o.size as number } : {}),
        ...(o.lease !== undefined ? { lease: o.lease as string } : {}),
        readOnly: o.readOnly === true,
        ...(o.exportName !== undefined ? { exportName: o.exportName as string } : {}),
        ...(o.connectionString !== undefined ? { connectionString: o.connectionString as string } : {}),
        ...(o.throttlePause !== undefined ? { throttlePauseMs: o.throttlePause as number } : {}),
        ...(o.deadline !== undefined ? { deadlineMs: o.deadline as number } : {}),
        limits: limitsFromFlags(o),
        print: (line) => process.stdout.write(`${line}\n`),
        log,
      });
      process.exit(code);
    } catch (err) {
      if (err instanceof UsageError) {
        log.error({ err: err.message }, "cannot serve");
        process.stderr.write(`pagedisk serve: ${err.message}\n`);
      } else {
        log.error({ err }, "cannot serve");
      }
      process.exit(EXIT.startup);
    }
  });

program.addCommand(
  agentCommand({
    openBinder,
    listenStatus: (source, listen) => listenStatus(statusApp(source), listen),
  }),
);
addManagementCommands(program);
// Started by the fuse-loop binder, never by hand (agent/host/relay.ts).
program
  .command("fuse-relay", { hidden: true })
  .argument("<spec>", "the relay's spec as JSON")
  .action(async (spec: string) => {
    let checked;
    try {
      checked = checkRelaySpec(JSON.parse(spec));
    } catch (err) {
      process.stderr.write(`pagedisk fuse-relay: ${(err as Error).message}\n`);
      process.exit(2);
    }
    process.exit(await runRelay(checked, createLogger({ name: "pagedisk-fuse-relay" })));
  });

await program.parseAsync(process.argv);
