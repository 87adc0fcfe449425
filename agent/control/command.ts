/**
 * `pagedisk agent join|run`: the commands a VM runs (install-agent.sh and
 * the systemd unit call them). Exit codes are AGENT_EXIT's: 0 done, 1 could
 * not start or the control plane refused, 2 bad command line (nothing done),
 * 3 the node's credential was refused while running.
 */
import { Option } from "commander";
import type { Command } from "commander";
import { createLogger, type Logger } from "../log.ts";
import { usage } from "../manage/args.ts";
import { group } from "../manage/command.ts";
import { parseListen, parseSize, UsageError } from "../serve/args.ts";
import { AGENT_EXIT, type AgentParts, type KernelMode, runAgent } from "./agent.ts";
import { ApiClientError } from "./api-client.ts";
import { controlPlaneApiUrl } from "./control-plane-url.ts";
import { checkNodeName, joinCluster } from "./join.ts";
import { NodeFileError } from "./node-file.ts";

const KERNEL_MODES: KernelMode[] = ["auto", "nbd", "fuse", "none"];
/** Dirty-log granularity bounds (design: a power of two, at least 64 KiB). */
const MIN_DIRTY_GRANULARITY = 64 * 1024;
const MAX_DIRTY_GRANULARITY = 1024 ** 3;

/** The `agent` command group; `parts` are the kernel binding and status API. */
export function agentCommand(parts: AgentParts): Command {
  const agent = group("agent", "run on a VM: join the cluster and serve its volumes");

  common(agent.command("join").description("join the cluster once; saves DIR/node.json (0600)")).action(
    async (o: Record<string, unknown>) => {
      const log = createLogger({ name: "pagedisk-agent" });
      try {
        const { identity, joinedNow } = await joinCluster({
          apiUrl: o.controlPlane as string,
          stateDir: o.stateDir as string,
          token: o.joinToken as string | undefined,
          name: o.name as string | undefined,
          log,
        });
        process.stdout.write(
          joinedNow
            ? `pagedisk agent: joined ${identity.controlPlane} as node ${identity.node}\n`
            : `pagedisk agent: already joined ${identity.controlPlane} as node ${identity.node}; nothing to do\n`,
        );
        process.exitCode = AGENT_EXIT.ok;
      } catch (err) {
        process.exitCode = report(err, log);
      }
    },
  );

  common(agent.command("run").description("join if needed, then serve this node's volumes until stopped"))
    .addOption(
      new Option("--kernel <mode>", "kernel binding: nbd, fuse (nbdfuse + loop), none, or auto")
        .choices(KERNEL_MODES)
        .default("auto"),
    )
    .option("--status-listen <address>", "status API: unix:PATH or tcp:127.0.0.1:PORT (default unix:DIR/status.sock)", asListen)
    .option(
      "--dirty-granularity <size>",
      "bytes tracked per bit of a replica's dirty-region log: a power of two, 64KiB..1GiB (default 1MiB)",
      asGranularity,
    )
    .action(async (o: Record<string, unknown>) => {
      const log = createLogger({ name: "pagedisk-agent" });
      const stateDir = o.stateDir as string;
      try {
        const code = await runAgent(
          {
            apiUrl: o.controlPlane as string,
            stateDir,
            token: o.joinToken as string | undefined,
            name: o.name as string | undefined,
            kernel: o.kernel as KernelMode,
            statusListen: (o.statusListen as string | undefined) ?? `unix:${stateDir}/status.sock`,
            dirtyGranularity: o.dirtyGranularity as number | undefined,
            log,
            print: (line) => process.stdout.write(`${line}\n`),
          },
          parts,
        );
        process.exit(code);
      } catch (err) {
        process.exit(report(err, log));
      }
    });

  return agent;
}

/** The options both commands take. */
function common(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--control-plane <url>", "control plane URL, e.g. https://app.example")
        .env("PAGEDISK_CONTROL_PLANE")
        .argParser(asControlPlane)
        .makeOptionMandatory(),
    )
    .addOption(new Option("--join-token <token>", "join token (needed until joined)").env("PAGEDISK_JOIN_TOKEN"))
    .requiredOption("--state-dir <dir>", "directory of node.json, sockets and bindings (created 0700)")
    .option("--name <name>", "node name (default: the host name)", asNodeName);
}

function asControlPlane(text: string): string {
  return usage(() => controlPlaneApiUrl(text));
}

function asNodeName(text: string): string {
  return usage(() => checkNodeName(text));
}

function asListen(text: string): string {
  return usage(() => {
    parseListen(text);
    return text;
  });
}

function asGranularity(text: string): number {
  return usage(() => {
    const bytes = parseSize(text);
    const powerOfTwo = (bytes & (bytes - 1)) === 0;
    if (!powerOfTwo || bytes < MIN_DIRTY_GRANULARITY || bytes > MAX_DIRTY_GRANULARITY) {
      throw new UsageError(`invalid dirty granularity "${text}": a power of two from 64KiB to 1GiB`);
    }
    return bytes;
  });
}

/** One line on stderr for `err` (and a log record); the exit code it means. */
function report(err: unknown, log: Logger): number {
  if (err instanceof UsageError) {
    process.stderr.write(`pagedisk: usage: ${err.message}\n`);
    return AGENT_EXIT.usage;
  }
  if (err instanceof ApiClientError) {
    log.error({ code: err.code, status: err.status }, err.message);
    process.stderr.write(`pagedisk: ${err.code}: ${err.message}\n`);
    return AGENT_EXIT.failed;
  }
  if (err instanceof NodeFileError) {
    process.stderr.write(`pagedisk: ${err.message}\n`);
    return AGENT_EXIT.failed;
  }
  log.error({ err }, "agent failed");
  process.stderr.write(`pagedisk: ${err instanceof Error ? err.message : String(err)}\n`);
  return AGENT_EXIT.failed;
}
