/**
 * `pagedisk orphans [list] [--pool P]`: blobs no volume claims and replicas
 * whose blob is missing. `pagedisk orphans delete --pool P <blob>... --yes`
 * (or `--all --yes`) deletes orphans, each checked again by the control
 * plane; nothing else ever deletes them. Without `--yes` nothing is sent.
 *
 * Blobs are named by their path in the pool's account,
 * `<container>/<blob name>` (a pool's replicas are each in a container of
 * their own), and an empty replica container by `<container>/`: the names
 * are passed through as the control plane gives them, never parsed here.
 */
import type { Command } from "commander";
import type { OrphanDeleteResult, Reconciliation } from "../../contract/reconciliation.ts";
import type { OrphanDeleteBody } from "../control/api-client.ts";
import { UsageError } from "../serve/args.ts";
import { apiCommand, group } from "./command.ts";
import { formatBytes, formatTime, print, printJson, printTable } from "./output.ts";

/** The `orphans` command group. */
export function orphansCommand(): Command {
  const orphans = group(
    "orphans",
    "blobs no volume claims (orphans) and replicas whose blob is missing",
  );

  apiCommand(
    orphans
      .command("list", { isDefault: true })
      .description("list orphans and missing blobs of every pool, or one (deletes nothing)")
      .option("--pool <pool>", "only this pool"),
    async ({ api, json }, _args, opts) => {
      const found = await api.reconcile(opts.pool as string | undefined);
      if (json) return printJson(found);
      showReconciliation(found);
    },
  );

  apiCommand(
    orphans
      .command("delete")
      .description("delete orphans of one pool, each checked again; claimed or recent blobs never")
      .argument("[blobs...]", "blob paths, <container>/<blob name>, as `orphans list` shows them")
      .requiredOption("--pool <pool>", "the pool whose containers hold them")
      .option("--all", "every orphan of the pool that is not recent (instead of names)")
      .option("--break-leases", "break the lease of a leased orphan to delete it")
      .option("--yes", "really delete (required)"),
    async ({ api, json }, blobs, opts) => {
      if (opts.all === true && blobs.length > 0)
        throw new UsageError("name blobs or give --all, not both");
      if (opts.all !== true && blobs.length === 0)
        throw new UsageError("name the blobs to delete, or give --all");
      if (opts.yes !== true)
        throw new UsageError("deleting blobs cannot be undone: add --yes to go ahead");
      const body: OrphanDeleteBody = {
        pool: opts.pool as string,
        ...(opts.all === true ? { all: true } : { blobs }),
        breakLeases: opts.breakLeases === true,
      };
      const done = await api.deleteOrphans(body);
      if (json) printJson(done);
      else showDeleted(done);
      // A blob that could not be deleted is a failure a script must see.
      if (done.results.some((r) => r.outcome === "failed")) process.exitCode = 1;
    },
  );

  return orphans;
}

function showReconciliation(r: Reconciliation): void {
  printTable(
    ["pool", "blob", "size", "modified", "lease", "volume", "replica", "reason"],
    r.orphans.map((o) => [
      o.pool,
      o.name,
      formatBytes(o.sizeBytes),
      formatTime(o.lastModified),
      o.leaseState,
      o.volume ?? "-",
      o.replica ?? "-",
      o.recent ? `${o.reason} (recent)` : o.reason,
    ]),
    "no orphans",
  );
  print("");
  printTable(
    ["volume", "replica", "pool", "state", "missing"],
    r.missing.map((m) => [
      m.volume,
      m.replica,
      m.pool,
      `${m.volumeState}/${m.replicaState}`,
      m.recent ? `${m.reason} (recent)` : m.reason,
    ]),
    "no missing blobs",
  );
  for (const p of r.pools) {
    if (p.reachable) continue;
    print("", `pool ${p.pool} could not be listed: ${p.error?.message ?? "unknown error"}`);
  }
}

function showDeleted(done: OrphanDeleteResult): void {
  printTable(
    ["blob", "outcome", "message"],
    done.results.map((r) => [r.name, outcomeOf(r), r.message ?? ""]),
    `no orphans to delete in pool ${done.pool}`,
  );
}

function outcomeOf(r: OrphanDeleteResult["results"][number]): string {
  const notes = [
    ...(r.leaseBroken ? ["lease broken"] : []),
    ...(r.containerDeleted ? ["container deleted"] : []),
  ];
  return notes.length > 0 ? `${r.outcome} (${notes.join(", ")})` : r.outcome;
}
