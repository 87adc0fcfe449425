/**
 * `pagedisk volume create|list|show|delete`, and the group that also holds
 * `update` (volume-update.ts) and `attach`/`detach` (volume-attach.ts).
 */
import type { Command } from "commander";
import { asCount, asFailover, asSize, collect } from "./args.ts";
import { apiCommand, group } from "./command.ts";
import { formatBytes, print, printJson } from "./output.ts";
import { attachCommands } from "./volume-attach.ts";
import { updateCommand } from "./volume-update.ts";
import { printVolume, printVolumeTable } from "./volume-view.ts";

/** The `volume` command group. */
export function volumeCommand(): Command {
  const volume = group("volume", "create, inspect, attach and delete volumes");

  apiCommand(
    volume
      .command("create")
      .description("create a volume: one page blob per replica, on distinct pools")
      .argument("<name>", "volume name (a DNS label)")
      .requiredOption(
        "--size <size>",
        "size, e.g. 8GiB (a multiple of 512 bytes, at most 8 TiB)",
        asSize,
      )
      .option("--replicas <n>", "number of replicas, each on its own pool (default: 1)", asCount)
      .option("--pool <pool>", "a pool the replicas may use (repeat, or comma-separate)", collect)
      .option("--required-node <node>", "attach only to this node (repeat for several)", collect)
      .option("--preferred-node <node>", "try this node first (repeat for several)", collect)
      .option("--failover <policy>", "automatic or manual (default: automatic)", asFailover),
    async ({ api, json }, [name], opts) => {
      // Only what was given: the API's defaults are the documented ones.
      const created = await api.createVolume({
        name: name!,
        sizeBytes: opts.size as number,
        ...(opts.replicas !== undefined ? { replicas: opts.replicas as number } : {}),
        ...(opts.pool !== undefined ? { pools: opts.pool as string[] } : {}),
        ...(opts.requiredNode !== undefined
          ? { requiredNodes: opts.requiredNode as string[] }
          : {}),
        ...(opts.preferredNode !== undefined
          ? { preferredNodes: opts.preferredNode as string[] }
          : {}),
        ...(opts.failover !== undefined
          ? { failover: opts.failover as "automatic" | "manual" }
          : {}),
      });
      if (json) return printJson(created);
      const pools = created.status.replicas.map((r) => r.pool).join(", ");
      print(
        `volume ${created.name} created: ${formatBytes(created.spec.sizeBytes)} on ${pools || "no pool"}`,
      );
    },
  );

  apiCommand(volume.command("list").description("list volumes"), async ({ api, json }) => {
    const list = await api.listVolumes();
    if (json) printJson(list);
    else printVolumeTable(list.items);
  });

  apiCommand(
    volume
      .command("show")
      .description("show a volume and its replicas")
      .argument("<name>", "volume name"),
    async ({ api, json }, [name]) => {
      const v = await api.getVolume(name!);
      if (json) printJson(v);
      else printVolume(v);
    },
  );

  updateCommand(volume);
  attachCommands(volume);

  apiCommand(
    volume
      .command("delete")
      .description("delete a volume and its page blobs")
      .argument("<name>", "volume name")
      .option("--force", "delete even while attached, fencing the writer"),
    async ({ api, json }, [name], opts) => {
      await api.deleteVolume(name!, opts.force === true);
      // The API answers 204: with --json there is nothing to print.
      if (!json) print(`volume ${name} deleted`);
    },
  );

  return volume;
}
