/**
 * Node records: health from heartbeats, whether new volumes may land on
 * the node, what it last reported, the generation of what it must serve,
 * and the hash of its credential (kept in the node's own row so that a
 * heartbeat is one read and one write). Written by join, heartbeat,
 * cordon, the sweeper and the arbiter's generation bumps.
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
  joinedAt: Timestamp,
  lastHeartbeatAt: Timestamp.nullable(),
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
    lastHeartbeatAt,
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
    // Kept as its own property so that the sweeper can query for silent nodes.
    ...(lastHeartbeatAt === null ? {} : { lastHeartbeatAt }),
  }),
  decode: (name, { desiredGeneration, appliedGeneration, ...p }) =>
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
      lastHeartbeatAt: p.lastHeartbeatAt ?? null,
    }),
};

export function nodes(registry: Registry): RecordTable<NodeRecord> {
  return recordTable(registry.nodes, nodeCodec);
}
