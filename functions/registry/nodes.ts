/**
 * Node records: health from heartbeats and whether new volumes may land on
 * the node. Written by join, heartbeat and the sweeper.
 */
import { z } from "zod";
import { NodeName, Timestamp } from "../../contract/names.ts";
import { NodeState } from "../../contract/node.ts";
import { type Codec, type RecordTable, recordTable } from "./records.ts";
import type { Registry } from "./tables.ts";

export const NodeRecord = z.object({
  name: NodeName,
  state: NodeState,
  cordoned: z.boolean(),
  agentVersion: z.string().nullable(),
  joinedAt: Timestamp,
  lastHeartbeatAt: Timestamp.nullable(),
});
export type NodeRecord = z.infer<typeof NodeRecord>;

export const nodeCodec: Codec<NodeRecord> = {
  rowKey: "node",
  name: (n) => n.name,
  encode: ({ name: _name, agentVersion, lastHeartbeatAt, ...rest }) => ({
    ...rest,
    ...(agentVersion === null ? {} : { agentVersion }),
    ...(lastHeartbeatAt === null ? {} : { lastHeartbeatAt }),
  }),
  decode: (name, p) =>
    NodeRecord.parse({
      ...p,
      name,
      agentVersion: p.agentVersion ?? null,
      lastHeartbeatAt: p.lastHeartbeatAt ?? null,
    }),
};

export function nodes(registry: Registry): RecordTable<NodeRecord> {
  return recordTable(registry.nodes, nodeCodec);
}
