/**
 * Node records: health as the sweeper judged it from the heartbeats in the
 * liveness table, whether new volumes may land on the node, what its agent
 * last reported, the generation of what it must serve, the key of its
 * liveness row, and the hash of its credential. Written by join, the
 * agent's reports (only when something changed), cordon, the sweeper and
 * the arbiter's generation bumps: never once per heartbeat.
 */
import { z } from "zod";
import { NodeName, Timestamp } from "../../contract/names.ts";
import { NodeFacts, NodeState, VolumeReport } from "../../contract/node.ts";
import { fromInt64, int64, MAX_STRING_PROPERTY_CHARS, packJson, unpackJson } from "./fields.ts";
import { type Codec, type RecordTable, recordTable } from "./records.ts";
import type { Registry } from "./tables.ts";

export const NodeRecord = z.object({
  name: NodeName,
  state: NodeState,
  cordoned: z.boolean(),
  agentVersion: z.string().nullable(),
  facts: NodeFacts,
  volumes: z.array(VolumeReport),
  /**
   * Bumped by the arbiter when what the node must serve changes. Absent
   * (read as 0) until the first bump, so joining need not know of it and
   * rows written before it existed stay valid.
   */
  desiredGeneration: z.int().min(0).optional(),
  /**
   * The newest generation the agent says it has applied (heartbeat's
   * `appliedGeneration`). Absent for an agent that does not say, which a
   * detach then does not wait for.
   */
  appliedGeneration: z.int().min(0).optional(),
  /** SHA-256 (hex) of the node's credential; never rendered. */
  credentialSha256: z.string().regex(/^[0-9a-f]{64}$/),
  /**
   * The PartitionKey of the node's liveness row (registry/liveness.ts):
   * unguessable, so that no other node can address the row; never
   * rendered. Absent for a node registered before heartbeats went to Table
   * Storage, until its desired state is next fetched.
   */
  livenessKey: z.string().regex(/^[A-Za-z0-9_-]{32}$/).optional(),
  joinedAt: Timestamp,
  /** When the agent's last report (volumes, events) was recorded. */
  lastReportAt: Timestamp.nullable(),
});
export type NodeRecord = z.infer<typeof NodeRecord>;

/** The node's desired-state generation; 0 before the first bump. */
export function generationOf(node: NodeRecord): number {
  return node.desiredGeneration ?? 0;
}

/**
 * Volume reports go in `volumes`, then `volumes1`, `volumes2`...: 64
 * reports with stats and device names outgrow one string property (32 Ki
 * characters), while the row (1 MiB) holds them easily. Each property
 * holds whole reports, so no character is split across two.
 */
const VOLUMES = "volumes";

function packReports(reports: readonly VolumeReport[]): Record<string, string> {
  const chunks: string[][] = [[]];
  let length = 2;
  for (const report of reports) {
    const text = JSON.stringify(report);
    if (length + text.length + 1 > MAX_STRING_PROPERTY_CHARS && chunks.at(-1)!.length > 0) {
      chunks.push([]);
      length = 2;
    }
    chunks.at(-1)!.push(text);
    length += text.length + 1;
  }
  return Object.fromEntries(
    chunks.map((texts, i) => {
      const text = `[${texts.join(",")}]`;
      // Only a single report past the limit gets here, which the contract's bounds rule out.
      if (text.length > MAX_STRING_PROPERTY_CHARS)
        throw new RangeError(`a volume report is ${text.length} chars as JSON`);
      return [i === 0 ? VOLUMES : `${VOLUMES}${i}`, text];
    }),
  );
}

function unpackReports(p: Record<string, unknown>): unknown[] {
  const reports: unknown[] = [];
  for (let i = 0; i === 0 || p[`${VOLUMES}${i}`] !== undefined; i++) {
    const chunk = unpackJson(p[i === 0 ? VOLUMES : `${VOLUMES}${i}`]);
    if (!Array.isArray(chunk)) throw new TypeError(`${VOLUMES}${i || ""} is not a JSON array`);
    reports.push(...(chunk as unknown[]));
  }
  return reports;
}

export const nodeCodec: Codec<NodeRecord> = {
  rowKey: "node",
  name: (n) => n.name,
  encode: ({
    name: _name,
    agentVersion,
    lastReportAt,
    facts,
    volumes,
    desiredGeneration,
    appliedGeneration,
    ...rest
  }) => ({
    ...rest,
    facts: packJson("facts", facts),
    ...packReports(volumes),
    ...(desiredGeneration === undefined ? {} : { desiredGeneration: int64(desiredGeneration) }),
    ...(appliedGeneration === undefined ? {} : { appliedGeneration: int64(appliedGeneration) }),
    ...(agentVersion === null ? {} : { agentVersion }),
    ...(lastReportAt === null ? {} : { lastReportAt }),
  }),
  decode: (name, { desiredGeneration, appliedGeneration, lastHeartbeatAt, ...p }) =>
    NodeRecord.parse({
      ...p,
      name,
      facts: unpackJson(p.facts),
      volumes: unpackReports(p),
      ...(desiredGeneration === undefined
        ? {}
        : { desiredGeneration: fromInt64(desiredGeneration) }),
      ...(appliedGeneration === undefined
        ? {}
        : { appliedGeneration: fromInt64(appliedGeneration) }),
      agentVersion: p.agentVersion ?? null,
      // Rows written before reports and heartbeats parted hold the report's time under its old name.
      lastReportAt: p.lastReportAt ?? lastHeartbeatAt ?? null,
    }),
};

export function nodes(registry: Registry): RecordTable<NodeRecord> {
  return recordTable(registry.nodes, nodeCodec);
}
