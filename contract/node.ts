/**
 * Nodes: VMs running the agent, how they join, what they report in their
 * heartbeats and what they are told to serve.
 */
import { z } from "zod";
import { EventType } from "./event.ts";
import { NodeName, PoolName, Timestamp, VolumeName } from "./names.ts";
import { ReplicaState, SizeBytes } from "./volume.ts";

/** Health from heartbeats; the allowed moves are in functions/registry/node-states.ts. */
export const NODE_STATES = ["READY", "SUSPECT", "LOST"] as const;
export const NodeState = z.enum(NODE_STATES);
export type NodeState = z.infer<typeof NodeState>;

const MAX_FACTS = 32;
/** Volumes one node reports on; far above what one VM's nbd devices serve. */
export const MAX_REPORTED_VOLUMES = 64;
/** Events per heartbeat; they are written in one Table transaction, which holds 100. */
export const MAX_REPORTED_EVENTS = 20;

/**
 * What the agent tells about its VM when it joins (OS, kernel, VM size,
 * zone...): flat, small, informational; placement does not read it yet.
 */
export const NodeFacts = z
  .record(
    z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/, { error: "fact names are identifiers" }),
    z.union([z.string().max(256), z.number(), z.boolean()]),
  )
  .refine((facts) => Object.keys(facts).length <= MAX_FACTS, {
    error: `at most ${MAX_FACTS} facts`,
  });
export type NodeFacts = z.infer<typeof NodeFacts>;

export const AgentVersion = z.string().min(1).max(64);

/** How a volume is doing on the node that serves it. */
export const SERVING_STATES = ["SERVING", "DEGRADED", "FAILED", "STOPPED"] as const;

/** One volume in a heartbeat. */
export const VolumeReport = z.strictObject({
  volume: VolumeName,
  /** The epoch of the attachment the agent serves (from its desired state). */
  epoch: z.int().min(0),
  state: z.enum(SERVING_STATES),
  /** Replicas the agent has taken offline (by replica id). */
  offlineReplicas: z
    .array(z.string().regex(/^[0-9a-f]{12}$/))
    .max(3)
    .default([]),
});
export type VolumeReport = z.infer<typeof VolumeReport>;

/** An event as the agent reports it; the node is the one reporting, the time is the control plane's. */
export const ReportedEvent = z.strictObject({
  type: EventType,
  volume: VolumeName.optional(),
  pool: PoolName.optional(),
  message: z.string().min(1).max(1024),
  data: z.record(z.string(), z.unknown()).optional(),
});
export type ReportedEvent = z.infer<typeof ReportedEvent>;

export const Node = z.object({
  name: NodeName,
  state: NodeState,
  /** A cordoned node keeps its volumes but gets no new ones. */
  cordoned: z.boolean(),
  agentVersion: z.string().max(64).nullable(),
  facts: NodeFacts,
  /** The volumes as of the last heartbeat. */
  volumes: z.array(VolumeReport),
  joinedAt: Timestamp,
  lastHeartbeatAt: Timestamp.nullable(),
});
export type Node = z.infer<typeof Node>;

export const NodeList = z.object({ items: z.array(Node) });
export type NodeList = z.infer<typeof NodeList>;

/** `POST /api/v1/nodes/join`, authenticated by a join token. */
export const JoinRequest = z.strictObject({
  name: NodeName,
  agentVersion: AgentVersion.optional(),
  facts: NodeFacts.default({}),
});
export type JoinRequest = z.infer<typeof JoinRequest>;

/** The node as registered, and its credential: shown this once, kept only as a hash. */
export const JoinResponse = z.object({
  node: Node,
  /** `pdn_<node>_<secret>`; the agent sends it as `Authorization: Bearer`. */
  credential: z.string(),
});
export type JoinResponse = z.infer<typeof JoinResponse>;

/** `POST /api/v1/nodes/{name}/heartbeat`, authenticated by the node's credential. */
export const Heartbeat = z
  .strictObject({
    agentVersion: AgentVersion.optional(),
    volumes: z.array(VolumeReport).max(MAX_REPORTED_VOLUMES).default([]),
    events: z.array(ReportedEvent).max(MAX_REPORTED_EVENTS).default([]),
  })
  .superRefine((h, ctx) => {
    const names = h.volumes.map((v) => v.volume);
    if (new Set(names).size !== names.length)
      ctx.addIssue({ code: "custom", path: ["volumes"], message: "a volume is reported twice" });
  });
export type Heartbeat = z.infer<typeof Heartbeat>;

/** A replica as its writer reaches it: the blob URL with a SAS for that blob only. */
export const DesiredReplica = z.object({
  id: z.string(),
  pool: PoolName,
  state: ReplicaState,
  /** Read and write, no delete, for this blob, until `sasExpiresAt`; null if the pool cannot sign. */
  url: z.string().nullable(),
});
export type DesiredReplica = z.infer<typeof DesiredReplica>;

/** A volume the node must serve, with what it needs to write it. */
export const DesiredAttachment = z.object({
  volume: VolumeName,
  sizeBytes: SizeBytes,
  epoch: z.int().min(1),
  /** Send on every write; writes without it, or with an older one, fail at the storage service. */
  leaseId: z.uuid(),
  replicas: z.array(DesiredReplica),
  sasExpiresAt: Timestamp,
});
export type DesiredAttachment = z.infer<typeof DesiredAttachment>;

/** `GET /api/v1/nodes/{name}/desired`: everything the node should serve now. */
export const DesiredState = z.object({
  node: NodeName,
  state: NodeState,
  cordoned: z.boolean(),
  attachments: z.array(DesiredAttachment),
});
export type DesiredState = z.infer<typeof DesiredState>;
