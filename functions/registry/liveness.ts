/**
 * The liveness table: agents say they are alive by writing to Table Storage
 * themselves, so that a node's steady state costs no Functions execution.
 *
 * One row per node: PartitionKey = the node's liveness key (random, known
 * to the node and the registry only), RowKey = `live`. The agent MERGEs it
 * every heartbeat interval, conditional on the ETag it last saw. When the
 * node's desired state changes the control plane rings the row (a MERGE of
 * its own), so the agent's next write fails with 412 and the agent fetches
 * its desired state: one request per beat both reports liveness and hears
 * of changes.
 *
 * Agents hold a SAS bound to the table's stored access policy `agents`
 * (update only) and, in Azure, to their own partition. Azurite enforces the
 * table name and the permission but not the range, so what keeps a node out
 * of another's row everywhere is that it can neither read nor list the
 * table and cannot guess another node's key. The sweeper rolls the policy's
 * expiry forward: a SAS works as long as the control plane sweeps, needs no
 * renewal through the API, and dropping the policy revokes every one.
 *
 * Who wrote a row last is in `by`: `agent` (its beat; `at` is the time the
 * agent claims, `gap` the milliseconds since its previous good beat),
 * `ring` (the control plane; `beatAt` keeps the beat the ring covered),
 * `join` (created at join), `api` (a beat recorded by the API for an agent
 * that reports through it). The service's own `Timestamp` says when.
 */
import { AzureNamedKeyCredential, generateTableSas, TableClient } from "@azure/data-tables";
import { randomBytes } from "node:crypto";
import { restStatus } from "../rest-error.ts";
import { allowsPlainHttp, connectionFields } from "../storage/connection-string.ts";

/** Every liveness row has this RowKey; the node's key is the PartitionKey. */
export const LIVE_ROW = "live";
/** The stored access policy every agent SAS is bound to. */
export const AGENT_POLICY = "agents";
/** A beat's claimed time counts at most this far past the judge's clock. */
export const CLAIM_TOLERANCE_MS = 2_000;

export type Writer = "agent" | "ring" | "join" | "api";

/** One node's row as the control plane reads it. */
export interface LivenessRow {
  key: string;
  by: Writer;
  /** When the service stored the last write (its `Timestamp`), ms since the epoch. */
  writtenAt: number;
  /** The time the agent claimed in its last beat. */
  at?: number;
  /** A ring's copy of the beat it covered. */
  beatAt?: number;
  /** Milliseconds between the agent's last two good beats, by its own clock. */
  gapMs?: number;
  etag: string;
}

export interface LivenessTable {
  readonly client: TableClient;
  /** The account key signs agents' SAS; it never leaves the control plane. */
  readonly credential: AzureNamedKeyCredential;
}

/**
 * Open (creating when missing, with its `agents` policy) the liveness
 * table of the account named by `connectionString`, which must hold the
 * account key: a Table SAS can only be signed with it.
 */
export async function openLiveness(connectionString: string, prefix = ""): Promise<LivenessTable> {
  const fields = connectionFields(connectionString);
  const name = fields.get("accountname");
  const key = fields.get("accountkey");
  if (!name || !key) {
    throw new Error(
      "the liveness account's connection string must name the account and hold its key (AccountName=...;AccountKey=...): agents' Table SAS are signed with it",
    );
  }
  const client = TableClient.fromConnectionString(connectionString, `${prefix}liveness`, {
    allowInsecureConnection: allowsPlainHttp(connectionString),
  });
  await client.createTable();
  const table = { client, credential: new AzureNamedKeyCredential(name, key) };
  // A SAS handed out before the first sweep must work too.
  await ensureAgentPolicy(table, Date.now());
  return table;
}

/** A new liveness key: 24 random bytes, base64url (valid in a PartitionKey). */
export function newLivenessKey(): string {
  return randomBytes(24).toString("base64url");
}

/** Create a node's row at join; its Timestamp is the node's first sign of life. */
export async function createLivenessRow(t: LivenessTable, key: string): Promise<string> {
  const res = await t.client.createEntity({ partitionKey: key, rowKey: LIVE_ROW, by: "join" });
  return res.etag ?? "";
}

/** Delete a node's row: its SAS can write nothing after that. Missing is fine. */
export async function deleteLivenessRow(t: LivenessTable, key: string): Promise<void> {
  try {
    await t.client.deleteEntity(key, LIVE_ROW);
  } catch (err) {
    if (restStatus(err) !== 404) throw err;
  }
}

/** Point read; undefined when the row does not exist. */
export async function readLivenessRow(
  t: LivenessTable,
  key: string,
): Promise<LivenessRow | undefined> {
  try {
    return rowOf(await t.client.getEntity<Record<string, unknown>>(key, LIVE_ROW));
  } catch (err) {
    if (restStatus(err) === 404) return undefined;
    throw err;
  }
}

/** Every row, paged: the table holds one row per node, so the scan reads what it returns. */
export async function scanLiveness(t: LivenessTable): Promise<LivenessRow[]> {
  const rows: LivenessRow[] = [];
  const entities = t.client.listEntities<Record<string, unknown>>({
    queryOptions: { select: ["PartitionKey", "RowKey", "by", "at", "beatAt", "gap", "Timestamp"] },
  });
  for await (const entity of entities) {
    const row = rowOf(entity);
    if (row) rows.push(row);
  }
  return rows;
}

function rowOf(entity: Record<string, unknown>): LivenessRow | undefined {
  const key = entity.partitionKey;
  const etag = entity.etag;
  const writtenAt = Date.parse(String(entity.timestamp));
  if (typeof key !== "string" || typeof etag !== "string" || Number.isNaN(writtenAt)) return undefined;
  const by: Writer =
    entity.by === "ring" || entity.by === "join" || entity.by === "api" ? entity.by : "agent";
  const time = (v: unknown) => (typeof v === "string" && !Number.isNaN(Date.parse(v)) ? Date.parse(v) : undefined);
  const at = time(entity.at);
  const beatAt = time(entity.beatAt);
  const gapMs = typeof entity.gap === "number" && entity.gap >= 0 ? entity.gap : undefined;
  return {
    key,
    by,
    writtenAt,
    etag,
    ...(at === undefined ? {} : { at }),
    ...(beatAt === undefined ? {} : { beatAt }),
    ...(gapMs === undefined ? {} : { gapMs }),
  };
}

/**
 * The node's last beat as the row tells, judged at `nowMs`. An agent's
 * claimed time counts only as far as `CLAIM_TOLERANCE_MS` past `nowMs` and
 * never below what the service recorded, so a node's clock can make it look
 * alive a little longer, never dead sooner. A ring carries the beat it
 * covered; a join row counts from its creation.
 */
export function lastBeatOf(row: LivenessRow, nowMs: number): number {
  const claimed = row.at === undefined ? undefined : Math.min(row.at, nowMs + CLAIM_TOLERANCE_MS);
  const recorded = row.by === "ring" ? (row.beatAt ?? row.writtenAt) : row.writtenAt;
  return Math.max(recorded, claimed ?? Number.NEGATIVE_INFINITY);
}

/**
 * Ring `key`'s row: its agent's next conditional write fails and it fetches
 * its desired state. The write is conditional on the row as read, so a beat
 * landing in between is re-read and its time kept in `beatAt`. A missing
 * row (a node whose agent has not fetched its desired state yet) has no one
 * to ring: false.
 */
export async function ringLiveness(t: LivenessTable, key: string, nowMs: number): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const row = await readLivenessRow(t, key);
    if (!row) return false;
    try {
      await t.client.updateEntity(
        {
          partitionKey: key,
          rowKey: LIVE_ROW,
          by: "ring",
          beatAt: new Date(lastBeatOf(row, nowMs)).toISOString(),
          ringAt: new Date(nowMs).toISOString(),
        },
        "Merge",
        { etag: row.etag },
      );
      return true;
    } catch (err) {
      const status = restStatus(err);
      if (status === 404) return false;
      if (status !== 412) throw err;
    }
  }
  throw new Error(`could not ring liveness row ${key.slice(0, 6)}...: it changed under every attempt`);
}

/** A beat recorded by the API for an agent that reports through it (agents before 0.2). */
export async function beatByApi(t: LivenessTable, key: string, nowMs: number): Promise<void> {
  await t.client.upsertEntity(
    { partitionKey: key, rowKey: LIVE_ROW, by: "api", at: new Date(nowMs).toISOString() },
    "Merge",
  );
}

/**
 * Once rolled, the `agents` policy reaches this far ahead: no credential an
 * agent holds outlives the control plane by more than 15 minutes...
 */
const AGENT_POLICY_LIFETIME_MS = 15 * 60_000;
/** ...and is rolled again when less than this is left (a Set Table ACL every 5 minutes). */
const AGENT_POLICY_ROLL_BELOW_MS = 10 * 60_000;

/**
 * Make sure the `agents` policy (update only) reaches well past `nowMs`,
 * rolling its expiry forward when less than 10 minutes are left. `known`
 * is its expiry as last set (the sweeper remembers it), saving a read;
 * without it the policy is read first. Returns the expiry (ISO).
 *
 * The service compares the expiry with its own clock, so `nowMs` is the
 * real time, not a judge's clock. Its start is set well back (Azurite
 * wants one), so that it is valid at once on any clock near ours.
 */
export async function ensureAgentPolicy(
  t: LivenessTable,
  nowMs: number,
  known?: string | null,
): Promise<string> {
  let expiry = known ?? undefined;
  if (expiry === undefined) {
    const policies = await t.client.getAccessPolicy();
    const found = [...policies].find((p) => p.id === AGENT_POLICY)?.accessPolicy?.expiry;
    expiry = found === undefined ? undefined : new Date(found).toISOString();
  }
  if (expiry !== undefined && Date.parse(expiry) - nowMs > AGENT_POLICY_ROLL_BELOW_MS) return expiry;
  const until = new Date(nowMs + AGENT_POLICY_LIFETIME_MS);
  await t.client.setAccessPolicy([
    {
      id: AGENT_POLICY,
      accessPolicy: { permission: "u", start: new Date(nowMs - 15 * 60_000), expiry: until },
    },
  ]);
  return until.toISOString();
}

/**
 * The URL of `key`'s row with a SAS bound to the `agents` policy and, in
 * Azure, to that one partition and row.
 */
export function livenessRowUrl(t: LivenessTable, key: string): string {
  const sas = generateTableSas(t.client.tableName, t.credential, {
    identifier: AGENT_POLICY,
    startPartitionKey: key,
    endPartitionKey: key,
    startRowKey: LIVE_ROW,
    endRowKey: LIVE_ROW,
  });
  const base = t.client.url.replace(/\/+$/, "");
  return `${base}/${t.client.tableName}(PartitionKey='${key}',RowKey='${LIVE_ROW}')?${sas}`;
}
