/**
 * The management commands of the `pagedisk` binary, all talking to the
 * control plane API: `volume`, `pool`, `node`, `token`, `events`, `orphans`.
 */
import type { Command } from "commander";
import { eventsCommand } from "./events.ts";
import { nodeCommand } from "./node.ts";
import { orphansCommand } from "./orphans.ts";
import { poolCommand } from "./pool.ts";
import { tokenCommand } from "./token.ts";
import { volumeCommand } from "./volume.ts";

/** Add every management command to `program`. */
export function addManagementCommands(program: Command): void {
  for (const command of [
    volumeCommand(),
    poolCommand(),
    nodeCommand(),
    tokenCommand(),
    eventsCommand(),
    orphansCommand(),
  ]) {
    program.addCommand(command);
  }
}
