/**
 * `pagedisk volume update`: the replica count, placement rules and failover
 * policy. Placement and policy change without moving data; a new replica
 * count is carried out by the control plane's repair while the volume is
 * attached (raised: new replicas rebuilt by the writer; lowered: the
 * surplus retired), which `volume show` follows.
 */
import type { Command } from "commander";
import type { VolumePatchBody } from "../control/api-client.ts";
import { UsageError } from "../serve/args.ts";
import { asCount, asFailover, collect } from "./args.ts";
import { apiCommand } from "./command.ts";
import { printJson } from "./output.ts";
import { printVolume } from "./volume-view.ts";

/** Add `update` to the `volume` group. */
export function updateCommand(volume: Command): void {
  apiCommand(
    volume
      .command("update")
      .description("change a volume's replica count, placement rules or failover policy")
      .argument("<name>", "volume name")
      .option(
        "--replicas <n>",
        "number of replicas, each on its own pool (raised: rebuilt by the writer once attached; lowered: the surplus is retired)",
        asCount,
      )
      .option(
        "--required-node <node>",
        "attach only to these nodes (replaces the list; repeat)",
        collect,
      )
      .option(
        "--preferred-node <node>",
        "try these nodes first (replaces the list; repeat)",
        collect,
      )
      .option("--clear-required-nodes", "let the volume attach to any node")
      .option("--clear-preferred-nodes", "prefer no node")
      .option("--failover <policy>", "automatic or manual", asFailover),
    async ({ api, json }, [name], opts) => {
      const patch = patchOf(opts);
      const updated = await api.updateVolume(name!, patch);
      if (json) printJson(updated);
      else printVolume(updated);
    },
  );
}

/** The PATCH body; refuses an empty or contradictory one before anything is sent. */
function patchOf(opts: Record<string, unknown>): VolumePatchBody {
  const patch: VolumePatchBody = {};
  if (opts.replicas !== undefined) patch.replicas = opts.replicas as number;
  for (const [list, clear, key] of [
    ["requiredNode", "clearRequiredNodes", "requiredNodes"],
    ["preferredNode", "clearPreferredNodes", "preferredNodes"],
  ] as const) {
    const names = opts[list] as string[] | undefined;
    if (names !== undefined && opts[clear] === true) {
      throw new UsageError(`give --${kebab(list)} or --${kebab(clear)}, not both`);
    }
    if (names !== undefined) patch[key] = names;
    if (opts[clear] === true) patch[key] = [];
  }
  if (opts.failover !== undefined) patch.failover = opts.failover as "automatic" | "manual";
  if (Object.keys(patch).length === 0) {
    throw new UsageError(
      "nothing to change: give --replicas, --required-node, --preferred-node, --clear-required-nodes, --clear-preferred-nodes or --failover",
    );
  }
  return patch;
}

function kebab(camel: string): string {
  return camel.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
