/**
 * Node records: health from heartbeats, whether new volumes may land on
 * the node, what it last reported, and the hash of its credential (kept in
 * the node's own row so that a heartbeat is one read and one write).
 * Written by join, heartbeat, cordon and the sweeper.
 */
import { z } from "zod";
import { NodeName, Timestamp } from "../../contract/names.ts";
import { NodeFacts, NodeState, VolumeReport } from "../../contract/node.ts";
import { packJson, unpackJson } from "./fields.ts";
import { type Codec, type RecordTable, recordTable } from "./records.ts";
import type { Registry } from "./tables.ts";

export const NodeRecord = z.object({
  name: NodeName,
  state: NodeState,
  cordoned: z.boolean(),
  agentVersion: z.string().nullable(),
  facts: NodeFacts,
  volumes: z.array(VolumeReport),
  /** SHA-256 (hex) of the node's credential; never rendered. */
  credentialSha256: z.string().regex(/^[0-9a-f]{64}$/),
  joinedAt: Timestamp,
  lastHeartbeatAt: Timestamp.nullable(),
});
export type NodeRecord = z.infer<typeof NodeRecord>;

export const nodeCodec: Codec<NodeRecord> = {
  rowKey: "node",
  name: (n) => n.name,
  encode: ({ name: _name, agentVersion, lastHeartbeatAt, facts, volumes, ...rest }) => ({
    ...rest,
    facts: packJson("facts", facts),
    volumes: packJson("volumes", volumes),
    ...(agentVersion === null ? {} : { agentVersion }),
    // Kept as its own property so that the sweeper can query for silent nodes.
    ...(lastHeartbeatAt === null ? {} : { lastHeartbeatAt }),
  }),
  decode: (name, p) =>
    NodeRecord.parse({
      ...p,
      name,
      facts: unpackJson(p.facts),
      volumes: unpackJson(p.volumes),
      agentVersion: p.agentVersion ?? null,
      lastHeartbeatAt: p.lastHeartbeatAt ?? null,
    }),
};

export function nodes(registry: Registry): RecordTable<NodeRecord> {
  return recordTable(registry.nodes, nodeCodec);
}
