/**
 * `pagedisk volume attach|detach`: choose or drop a volume's single writer.
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
      .requiredOption("--node <node>", "the node that will serve the volume"),
    async ({ api, json }, [name], opts) => {
      const attachment = await api.attachVolume(name!, opts.node as string);
      if (json) return printJson(attachment);
      print(
        `volume ${attachment.volume} attached to node ${attachment.node} (epoch ${attachment.epoch})`,
      );
    },
  );

  apiCommand(
    volume
      .command("detach")
      .description("leave the volume with no writer (every replica's lease released)")
      .argument("<name>", "volume name"),
    async ({ api, json }, [name]) => {
      const v = await api.detachVolume(name!);
      if (json) return printJson(v);
      print(`volume ${v.name} detached (${v.status.state})`);
    },
  );
}
