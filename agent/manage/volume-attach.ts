/**
 * `pagedisk volume attach|detach`: choose or drop a volume's single writer.
 * `attach` without `--node` lets the control plane place the volume as
 * failover would (required nodes only, preferred first, then the least
 * loaded), and says where it went.
 */
import type { Command } from "commander";
import { apiCommand } from "./command.ts";
import { print, printJson } from "./output.ts";

/** Add `attach` and `detach` to the `volume` group. */
export function attachCommands(volume: Command): void {
  apiCommand(
    volume
      .command("attach")
      .description("make a node the volume's only writer (new epoch, fresh lease on every replica)")
      .argument("<name>", "volume name")
      .option(
        "--node <node>",
        "the node that will serve the volume (default: the control plane chooses: required nodes only, preferred first, least loaded)",
      ),
    async ({ api, json }, [name], opts) => {
      const named = opts.node as string | undefined;
      const attachment = await api.attachVolume(name!, named);
      if (json) return printJson(attachment);
      const chosen = named === undefined ? ", chosen by the control plane" : "";
      print(
        `volume ${attachment.volume} attached to node ${attachment.node} (epoch ${attachment.epoch}${chosen})`,
      );
    },
  );

  apiCommand(
    volume
      .command("detach")
      .description(
        "leave the volume with no writer: its node drains it, then every replica's lease is released",
      )
      .argument("<name>", "volume name")
      .option("--force", "release the leases at once, without waiting for the node to drain the volume"),
    async ({ api, json }, [name], opts) => {
      const v = await api.detachVolume(name!, opts.force === true);
      if (json) return printJson(v);
      print(`volume ${v.name} detached (${v.status.state})`);
    },
  );
}
