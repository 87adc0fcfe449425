/**
 * `pagedisk events`: what happened in the cluster, newest first, one page
 * or (`--all`) every page.
 */
import type { Command } from "commander";
import type { Event, EventPage } from "../../contract/event.ts";
import type { EventFilter } from "../control/api-client.ts";
import { asCount } from "./args.ts";
import { apiCommand, group } from "./command.ts";
import { formatTime, printJson, printTable } from "./output.ts";

/** The `events` command (a command of its own, not a group). */
export function eventsCommand(): Command {
  // Built like a group so it shares the exit codes and the error format.
  const events = group("events", "list events, newest first");
  return apiCommand(
    events
      .option("--volume <volume>", "only events of this volume")
      .option("--node <node>", "only events of this node")
      .option("--type <type>", "only events of this type, e.g. volume-attached")
      .option("--limit <n>", "events per page (1-500, default 100)", asCount)
      .option("--all", "follow every page to the oldest event"),
    async ({ api, json }, _args, opts) => {
      const filter: EventFilter = {};
      for (const key of ["volume", "node", "type", "limit"] as const) {
        if (opts[key] !== undefined) Object.assign(filter, { [key]: opts[key] });
      }
      const page =
        opts.all === true ? await allPages(api.listEvents, filter) : await api.listEvents(filter);
      if (json) return printJson(page);
      printTable(
        ["time", "type", "volume", "node", "message"],
        page.items.map((e: Event) => [
          formatTime(e.at),
          e.type,
          e.volume ?? "-",
          e.node ?? "-",
          e.message,
        ]),
        "no events",
      );
      if (page.continuation !== null) {
        process.stderr.write("pagedisk: more events: use --all, or a larger --limit\n");
      }
    },
  );
}

/** Every page concatenated, in the API's order, as one page with no continuation. */
async function allPages(
  list: (filter: EventFilter) => Promise<EventPage>,
  filter: EventFilter,
): Promise<EventPage> {
  const items: Event[] = [];
  let continuation: string | null | undefined;
  do {
    const page = await list({ ...filter, ...(continuation ? { continuation } : {}) });
    items.push(...page.items);
    continuation = page.continuation;
  } while (continuation);
  return { items, continuation: null };
}
