/**
 * `pagedisk orphans` as users run it: the built binary against the local
 * control plane over Azurite, with blobs and replica containers made and
 * removed behind the control plane's back. The control plane's clock runs
 * `shift` ahead of real time, so that blobs made just now are recent
 * (shift 0) or past the 10-minute grace period. Blobs are named by their
 * path, `<container>/<blob name>`.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { OrphanDeleteResult, Reconciliation } from "../../contract/reconciliation.ts";
import type { Volume } from "../../contract/volume.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { replicaContainerName } from "../../functions/storage/replica-container.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type CliResult, pagedisk, rows } from "./cli.ts";

const OLD = 11 * 60_000;
const MiB = 1024 * 1024;

let azurite: Azurite;
let local: LocalControlPlane;
let scratch: string;
let account: BlobServiceClient;
let volume: Volume;
/** The replica of the volume `lost`, whose blob a test deletes. */
let lostId: string;
let shift = OLD;

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  scratch = await mkdtemp(join(tmpdir(), "pagedisk-orphans-"));
  local = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir: join(scratch, "state"),
    sweepIntervalMs: 3_600_000,
    now: () => new Date(Date.now() + shift),
    log: () => {},
  });
  const cs = azurite.connectionString;
  const pool = await cli("pool", "add", "local", "--connection-string", cs, "--container", "disks");
  expect(pool.code).toBe(0);
  const created = await cli("volume", "create", "db", "--size", "1MiB", "--json");
  expect(created.code).toBe(0);
  volume = JSON.parse(created.stdout) as Volume;
  account = BlobServiceClient.fromConnectionString(azurite.connectionString);
  const ghost = account.getContainerClient(replicaContainerName("disks", "0123456789ab"));
  await ghost.create();
  await ghost
    .getPageBlobClient("ghost/0123456789ab")
    .create(MiB, { metadata: { pagediskvolume: "ghost", pagediskreplica: "0123456789ab" } });
  await account.getContainerClient("disks").getBlockBlobClient("notes.txt").upload("hi", 2);
  await account
    .getContainerClient(replicaContainerName("disks", "eeeeeeeeeeee"))
    .create({ metadata: { pagediskvolume: "gone", pagediskreplica: "eeeeeeeeeeee" } });
});
afterAll(async () => {
  await local?.close();
  await azurite?.dispose();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});
beforeEach(() => {
  shift = OLD;
});

function cli(...args: string[]): Promise<CliResult> {
  return pagedisk(args, {
    cwd: scratch,
    env: { PAGEDISK_API_URL: local.apiUrl, PAGEDISK_API_KEY: local.adminKey },
  });
}

/** Every blob of the account by path, and every container as `<container>/`. */
async function names(): Promise<string[]> {
  const found: string[] = [];
  for await (const c of account.listContainers()) {
    found.push(`${c.name}/`);
    for await (const b of account.getContainerClient(c.name).listBlobsFlat())
      found.push(`${c.name}/${b.name}`);
  }
  return found.sort();
}

const GHOST = "disks-0123456789ab/ghost/0123456789ab";
const EMPTY = "disks-eeeeeeeeeeee/";
const replicaContainer = () => `${replicaContainerName("disks", volume.status.replicas[0]!.id)}/`;
const replicaBlob = () => `${replicaContainer()}db/${volume.status.replicas[0]!.id}`;

describe("pagedisk orphans", () => {
  it("lists orphans as a table, and the API's JSON with --json", async () => {
    const list = await cli("orphans");
    expect(list.stderr).toBe("");
    expect(list.code).toBe(0);
    const [header, ...table] = rows(list.stdout.split("\n\n")[0]!);
    expect(header).toEqual([
      "POOL",
      "BLOB",
      "SIZE",
      "MODIFIED",
      "LEASE",
      "VOLUME",
      "REPLICA",
      "REASON",
    ]);
    expect(table.map((r) => [r[1], r[2], r[4], r[5], r[6], r[7]])).toEqual([
      ["disks/notes.txt", "2 B", "available", "-", "-", "not-pagedisk"],
      [GHOST, "1 MiB", "available", "ghost", "0123456789ab", "no-such-volume"],
      [EMPTY, "0 B", "available", "gone", "eeeeeeeeeeee", "no-such-volume"],
    ]);
    expect(list.stdout).toContain("no missing blobs");

    const json = await cli("orphans", "list", "--pool", "local", "--json");
    expect(json.code).toBe(0);
    const parsed = Reconciliation.parse(JSON.parse(json.stdout));
    expect(parsed.orphans.map((o) => o.name)).toEqual(["disks/notes.txt", GHOST, EMPTY]);
    expect(parsed.pools).toEqual([{ pool: "local", reachable: true, blobs: 3 }]);
  });

  it("marks recent orphans as such", async () => {
    shift = 0;
    const list = await cli("orphans", "--pool", "local");
    expect(list.code).toBe(0);
    expect(list.stdout).toContain("no-such-volume (recent)");
  });

  it("lists a replica whose blob was deleted as missing", async () => {
    const lost = await cli("volume", "create", "lost", "--size", "1MiB", "--json");
    const lostVolume = JSON.parse(lost.stdout) as Volume;
    lostId = lostVolume.status.replicas[0]!.id;
    await account
      .getContainerClient(replicaContainerName("disks", lostId))
      .getPageBlobClient(`lost/${lostId}`)
      .delete();
    const missingOf = async () => rows((await cli("orphans")).stdout.split("\n\n")[1]!);
    // Made just now on the control plane's clock: its blob may still be on its way.
    const id = lostVolume.status.replicas[0]!.id;
    expect(await missingOf()).toEqual([
      ["VOLUME", "REPLICA", "POOL", "STATE", "MISSING"],
      ["lost", id, "local", "DETACHED/ONLINE", "blob-not-found (recent)"],
    ]);
    shift = 2 * OLD;
    const [, row] = await missingOf();
    expect(row).toEqual(["lost", id, "local", "DETACHED/ONLINE", "blob-not-found"]);
  });

  it("deletes nothing without --yes, and says so", async () => {
    const before = await names();
    const r = await cli("orphans", "delete", "--pool", "local", GHOST);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      "pagedisk: usage: deleting blobs cannot be undone: add --yes to go ahead\n",
    );
    const both = await cli("orphans", "delete", "--pool", "local", "--all", GHOST, "--yes");
    expect(both.code).toBe(2);
    expect(await names()).toEqual(before);
  });

  it("refuses a claimed blob and a recent orphan through the API, deleting nothing", async () => {
    const before = await names();
    const claimed = await cli("orphans", "delete", "--pool", "local", replicaBlob(), "--yes");
    expect(claimed.code).toBe(1);
    expect(claimed.stderr).toBe(
      `pagedisk: NotAnOrphan: nothing deleted: blob ${replicaBlob()} in pool local is claimed by a volume\n`,
    );

    shift = 0;
    const recent = await cli("orphans", "delete", "--pool", "local", GHOST, "--yes");
    expect(recent.code).toBe(1);
    expect(recent.stderr).toContain("NotAnOrphan");
    expect(await names()).toEqual(before);
  });

  it("refuses a blob named without its container, deleting nothing", async () => {
    const before = await names();
    const r = await cli("orphans", "delete", "--pool", "local", "notes.txt", "--yes");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("InvalidRequest");
    expect(r.stderr).toContain("<container>/<blob name>");
    expect(await names()).toEqual(before);
  });

  it("deletes a named orphan with --yes, and its replica container with it", async () => {
    const r = await cli("orphans", "delete", "--pool", "local", GHOST, "--yes");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(rows(r.stdout)).toEqual([
      ["BLOB", "OUTCOME", "MESSAGE"],
      [GHOST, "deleted (container deleted)"],
    ]);
    expect(await names()).not.toContain(GHOST);
    expect(await names()).not.toContain("disks-0123456789ab/");
  });

  it("deletes every old orphan of the pool with --all, never the claimed blob", async () => {
    const r = await cli("orphans", "delete", "--pool", "local", "--all", "--yes", "--json");
    expect(r.code).toBe(0);
    const done = OrphanDeleteResult.parse(JSON.parse(r.stdout));
    expect(done.results).toEqual([
      { name: "disks/notes.txt", outcome: "deleted" },
      { name: EMPTY, outcome: "deleted" },
    ]);
    // Left: the pool's own container, db's replica, and lost's container (claimed, its blob missing).
    expect(await names()).toEqual(
      [
        "disks/",
        replicaContainer(),
        replicaBlob(),
        `${replicaContainerName("disks", lostId)}/`,
      ].sort(),
    );
  });
});
