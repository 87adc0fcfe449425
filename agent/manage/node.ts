/**
 * `pagedisk node list|show|cordon|uncordon|remove`: VMs running the agent.
 */
import type { Command } from "commander";
import type { Node } from "../../contract/node.ts";
import { apiCommand, group } from "./command.ts";
import { formatAge, formatTime, print, printFields, printJson, printTable } from "./output.ts";

/** The `node` command group. */
export function nodeCommand(): Command {
  const node = group("node", "inspect, cordon and remove nodes (VMs running the agent)");

  apiCommand(node.command("list").description("list nodes"), async ({ api, json }) => {
    const list = await api.listNodes();
    if (json) return printJson(list);
    printTable(
      ["name", "state", "cordoned", "volumes", "agent", "heartbeat"],
      list.items.map((n) => [
        n.name,
        n.state,
        n.cordoned ? "yes" : "no",
        String(n.volumes.length),
        n.agentVersion ?? "-",
        formatAge(n.lastHeartbeatAt),
      ]),
      "no nodes",
    );
  });

  apiCommand(
    node
      .command("show")
      .description("show a node and the volumes it reports")
      .argument("<name>", "node name"),
    async ({ api, json }, [name]) => {
      const n = await api.getNode(name!);
      if (json) printJson(n);
      else showNode(n);
    },
  );

  for (const cordon of [true, false]) {
    apiCommand(
      node
        .command(cordon ? "cordon" : "uncordon")
        .description(
          cordon
            ? "keep new volumes off a node (its volumes stay)"
            : "let new volumes land on a node again",
        )
        .argument("<name>", "node name"),
      async ({ api, json }, [name]) => {
        const n = cordon ? await api.cordonNode(name!) : await api.uncordonNode(name!);
        if (json) printJson(n);
        else print(`node ${n.name} ${n.cordoned ? "cordoned" : "uncordoned"}`);
      },
    );
  }

  apiCommand(
    node
      .command("remove")
      .description("forget a node that owns no volume; its credential stops working")
      .argument("<name>", "node name"),
    async ({ api, json }, [name]) => {
      await api.removeNode(name!);
      // The API answers 204: with --json there is nothing to print.
      if (!json) print(`node ${name} removed`);
    },
  );

  return node;
}

function showNode(n: Node): void {
  printFields([
    ["name", n.name],
    ["state", n.state],
    ["cordoned", n.cordoned ? "yes" : "no"],
    ["agent", n.agentVersion ?? "-"],
    ["joined", formatTime(n.joinedAt)],
    ["heartbeat", `${formatTime(n.lastHeartbeatAt)} (${formatAge(n.lastHeartbeatAt)})`],
    ...Object.entries(n.facts).map(([k, v]): [string, string] => [`fact ${k}`, String(v)]),
  ]);
  if (n.volumes.length === 0) return;
  print("");
  printTable(
    ["volume", "epoch", "state", "replicas not online"],
    n.volumes.map((v) => [
      v.volume,
      String(v.epoch),
      v.state,
      v.replicas
        .filter((r) => r.state !== "ONLINE")
        .map((r) => `${r.id} ${r.state}${r.progress === undefined ? "" : ` ${r.progress}%`}`)
        .join(", ") || "-",
    ]),
    "",
  );
}
