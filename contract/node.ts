/**
 * Nodes: VMs running the agent, how they join, what they report when
 * something changes, and what they are told to serve (with where to send
 * their heartbeats, which go to Table Storage, not to this API).
 */
import { z } from "zod";
import { EventType } from "./event.ts";
import { NodeName, PoolName, Timestamp, VolumeName } from "./names.ts";
import { MAX_REPLICA_SLOTS, ReplicaId, ReplicaState, SizeBytes } from "./volume.ts";

/** Health judged from heartbeats; the allowed moves are in functions/registry/node-states.ts. */
export const NODE_STATES = ["READY", "SUSPECT", "LOST"] as const;
export const NodeState = z.enum(NODE_STATES);
export type NodeState = z.infer<typeof NodeState>;

const MAX_FACTS = 32;
/**
 * Facts as JSON, at most: with escaping, 32 facts of 256 characters could
 * outgrow the node row's property (32 Ki characters).
 */
const MAX_FACTS_JSON_CHARS = 8 * 1024;
/** Volumes one node reports on; far above what one VM's nbd devices serve. */
export const MAX_REPORTED_VOLUMES = 64;
/** Events per report; they are written in one Table transaction per partition, which holds 100. */
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
  })
  .refine((facts) => JSON.stringify(facts).length <= MAX_FACTS_JSON_CHARS, {
    error: `facts take at most ${MAX_FACTS_JSON_CHARS} characters as JSON`,
  });
export type NodeFacts = z.infer<typeof NodeFacts>;

export const AgentVersion = z.string().min(1).max(64);

/** How a volume is doing on the node that serves it. */
export const SERVING_STATES = ["SERVING", "DEGRADED", "FAILED", "STOPPED"] as const;

const Amount = z.number().min(0);
/** Percentiles of request latency, in milliseconds. */
export const LatencyPercentiles = z.strictObject({ p50: Amount, p99: Amount });
export type LatencyPercentiles = z.infer<typeof LatencyPercentiles>;

/**
 * How a volume's I/O is going on the node that serves it, as of its last
 * report. Counters are cumulative since the volume was opened on this
 * node, so a lost report loses no counts; latencies cover the requests
 * since the previous report.
 */
export const VolumeStats = z.strictObject({
  readOps: Amount,
  writeOps: Amount,
  bytesRead: Amount,
  bytesWritten: Amount,
  errors: Amount,
  /** Times the volume paused I/O because the storage service throttled it. */
  throttlePauses: Amount,
  /** Requests in flight when the report was taken. */
  queueDepth: Amount,
  readLatencyMs: LatencyPercentiles,
  writeLatencyMs: LatencyPercentiles,
});
export type VolumeStats = z.infer<typeof VolumeStats>;

/** How the writer sees a replica: what it does with it now. */
export const REPORTED_REPLICA_STATES = ["ONLINE", "OFFLINE", "RESYNCING", "REBUILDING"] as const;

/**
 * One replica in a report. ONLINE while the control plane says
 * RESYNCING or REBUILDING means the copy is done and the replica is in
 * sync: the control plane then records it ONLINE.
 */
export const ReplicaReport = z.strictObject({
  id: ReplicaId,
  state: z.enum(REPORTED_REPLICA_STATES),
  /** Percent done of the copy (RESYNCING, REBUILDING). */
  progress: z.number().min(0).max(100).optional(),
  /** Bytes copied so far by the current resync or rebuild. */
  copiedBytes: Amount.optional(),
  /** Bytes the current resync or rebuild has to copy in all. */
  totalBytes: Amount.optional(),
  /** Bytes marked dirty (written while OFFLINE), by the writer's dirty-region log. */
  dirtyBytes: Amount.optional(),
  /**
   * OFFLINE because this node stopped while writing (a crash, a kill) with
   * writes in flight that may have reached some replicas only: its content
   * is not trusted, it is resynced in full, and its pool is not at fault.
   */
  stale: z.literal(true).optional(),
  /**
   * Why it is OFFLINE, or why its copy stopped: one printable line, short,
   * so that 64 volumes of these still fit one report and one node row.
   */
  error: z
    .string()
    .max(160)
    // eslint-disable-next-line no-control-regex -- control characters are what it refuses
    .regex(/^[^\u0000-\u001f\u007f]*$/, { error: "error is one line of printable text" })
    .optional(),
});
export type ReplicaReport = z.infer<typeof ReplicaReport>;

/** One volume in a report. */
export const VolumeReport = z.strictObject({
  volume: VolumeName,
  /** The epoch of the attachment the agent serves (from its desired state). */
  epoch: z.int().min(0),
  state: z.enum(SERVING_STATES),
  /** Every replica the agent was given, as it sees them now. */
  replicas: z.array(ReplicaReport).max(MAX_REPLICA_SLOTS).default([]),
  stats: VolumeStats.optional(),
  /** The kernel block device the volume is bound to, e.g. `/dev/nbd3` or `/dev/loop7`. */
  device: z.string().max(256).optional(),
});
export type VolumeReport = z.infer<typeof VolumeReport>;

/**
 * An event's data as JSON, at most: an agent's is a few fields (the epoch,
 * a replica, an error code), and a larger one would outgrow the event
 * row's property.
 */
const MAX_EVENT_DATA_JSON_CHARS = 1024;

/**
 * An event as the agent reports it; the node is the one reporting, the time
 * is the control plane's. Well-formed is not enough to be recorded: the
 * type must be one agents report (`AGENT_EVENTS`), about a volume the node
 * wrote at the epoch in `data.epoch`, and a pool that volume's replicas use
 * (functions/health/reported-events.ts); a report with any other event is
 * refused whole (`EventRefused`), so that an agent can drop just those.
 */
export const ReportedEvent = z.strictObject({
  type: EventType,
  volume: VolumeName.optional(),
  pool: PoolName.optional(),
  message: z.string().min(1).max(1024),
  data: z
    .record(z.string(), z.unknown())
    .refine((data) => JSON.stringify(data).length <= MAX_EVENT_DATA_JSON_CHARS, {
      error: `data takes at most ${MAX_EVENT_DATA_JSON_CHARS} characters as JSON`,
    })
    .optional(),
});
export type ReportedEvent = z.infer<typeof ReportedEvent>;

export const Node = z.object({
  name: NodeName,
  state: NodeState,
  /** A cordoned node keeps its volumes but gets no new ones. */
  cordoned: z.boolean(),
  agentVersion: z.string().max(64).nullable(),
  facts: NodeFacts,
  /** The volumes as of the last report. */
  volumes: z.array(VolumeReport),
  /**
   * Bumped whenever the set of volumes the node must serve, or the lease
   * and epoch of one of them, changes; the bump rings the node's liveness
   * row, which sends its agent to fetch the desired state.
   */
  desiredGeneration: z.int().min(0),
  joinedAt: Timestamp,
  /** The node's last heartbeat (in the liveness table); null before the first. */
  lastHeartbeatAt: Timestamp.nullable(),
  /** When the agent's last report (volumes, events) was recorded. */
  lastReportAt: Timestamp.nullable(),
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

/**
 * `POST /api/v1/nodes/{name}/report`, authenticated by the node's
 * credential: sent when what the agent reports changed (a volume's state,
 * a replica, events, the generation applied), not on a timer.
 */
export const NodeReport = z
  .strictObject({
    agentVersion: AgentVersion.optional(),
    volumes: z.array(VolumeReport).max(MAX_REPORTED_VOLUMES).default([]),
    events: z.array(ReportedEvent).max(MAX_REPORTED_EVENTS).default([]),
    /** Replaces the facts recorded at join (or by an earlier report) when given. */
    facts: NodeFacts.optional(),
    /**
     * The newest desired-state generation the agent has applied: every
     * volume that generation no longer lists is drained, flushed and closed.
     * A detach waits for it (functions/arbiter/detach-drain.ts).
     */
    appliedGeneration: z.int().min(0).optional(),
  })
  .superRefine((h, ctx) => {
    const names = h.volumes.map((v) => v.volume);
    if (new Set(names).size !== names.length)
      ctx.addIssue({ code: "custom", path: ["volumes"], message: "a volume is reported twice" });
  });
export type NodeReport = z.infer<typeof NodeReport>;

/**
 * The answer to a report: the node's desired generation, so that an agent
 * that missed a ring (its row was rung while it could not beat) fetches.
 */
export const ReportAnswer = z.object({ desiredGeneration: z.int().min(0) });
export type ReportAnswer = z.infer<typeof ReportAnswer>;

/** A replica as its writer reaches it: the blob URL with a SAS for that blob only. */
export const DesiredReplica = z.object({
  id: z.string(),
  pool: PoolName,
  state: ReplicaState,
  /** Read and write, no delete, for this blob, until `sasExpiresAt`; null if the pool cannot sign. */
  url: z.string().nullable(),
  /**
   * OFFLINE because its content is not trusted (its last writer was lost
   * with writes in flight): no dirty log may bring it back, only a full copy.
   */
  stale: z.literal(true).optional(),
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

/** A query parameter holding a whole number: digits only, so `?after=` or `?after=0x1` are refused. */
function wholeNumber(max: number) {
  return z
    .string()
    .regex(/^[0-9]{1,16}$/, { error: "expected a whole number" })
    .transform(Number)
    .pipe(z.int().max(max));
}

/**
 * `GET /api/v1/nodes/{name}/desired` answers at once: nothing holds a
 * Functions execution open. Agents before 0.2 still send `after` and
 * `waitSeconds` (they held the request open); both are accepted and
 * ignored, so such an agent keeps working until it is upgraded.
 */
export const DesiredStateQuery = z.strictObject({
  after: wholeNumber(Number.MAX_SAFE_INTEGER)
    .optional()
    .describe("ignored (sent by agents before 0.2)"),
  waitSeconds: wholeNumber(25).optional().describe("ignored (sent by agents before 0.2)"),
});
export type DesiredStateQuery = z.infer<typeof DesiredStateQuery>;

/**
 * Where and how often the node sends its heartbeats: a MERGE of its own
 * row in the liveness table, conditional on `etag`. A 412 means the row was
 * rung (the desired state changed): fetch it again.
 */
export const LivenessTarget = z.object({
  /** The row's URL with a SAS: update only, that row only, revocable at once. */
  url: z.string(),
  /** The row's ETag when this desired state was read; the first beat is conditional on it. */
  etag: z.string(),
  intervalMs: z.int().min(100),
});
export type LivenessTarget = z.infer<typeof LivenessTarget>;

/** `GET /api/v1/nodes/{name}/desired`: everything the node should serve now. */
export const DesiredState = z.object({
  node: NodeName,
  /** The node's `desiredGeneration` when this was read; reported back as `appliedGeneration`. */
  generation: z.int().min(0),
  state: NodeState,
  cordoned: z.boolean(),
  attachments: z.array(DesiredAttachment),
  liveness: LivenessTarget,
});
export type DesiredState = z.infer<typeof DesiredState>;
