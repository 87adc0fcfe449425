/**
 * What the status API reads: the agent's own view of itself and of the
 * volumes it serves. Whoever runs the volumes (serve, the reconcile loop)
 * implements it; the status API only reads, and reads on every request, so
 * it never holds a stale copy.
 */
import type { REPORTED_REPLICA_STATES, SERVING_STATES } from "../../contract/node.ts";
import type { VolumeMetrics } from "../engine/volume.ts";

/** How a volume is doing on this node (contract/node.ts `SERVING_STATES`). */
export type ServingState = (typeof SERVING_STATES)[number];

/** How the writer uses a replica (contract/node.ts `REPORTED_REPLICA_STATES`). */
export type ReplicaUse = (typeof REPORTED_REPLICA_STATES)[number];

/** One replica of a served volume, as its writer sees it now. */
export interface ReplicaStatus {
  id: string;
  pool: string;
  state: ReplicaUse;
  /** Percent done of a resync or rebuild (RESYNCING, REBUILDING). */
  progress?: number;
  copiedBytes?: number;
  totalBytes?: number;
  /** Bytes written while it was offline and not yet copied to it. */
  dirtyBytes?: number;
  /** Why it is OFFLINE, or why its copy stopped. */
  error?: string;
}

/** The agent itself. */
export interface NodeStatus {
  /** Null until the node has joined a cluster (or when it runs without one). */
  name: string | null;
  version: string;
  /** Base URL of the control plane; "" when the agent runs without one. */
  controlPlane: string;
  /** Whether the last heartbeat landed in the control plane's liveness table. */
  connected: boolean;
  /** ISO time of the last heartbeat that landed. */
  lastHeartbeatAt: string | null;
}

/** One volume this agent serves. */
export interface ServedVolume {
  name: string;
  epoch: number;
  state: ServingState;
  sizeBytes: number;
  /** The NBD unix socket it is exported on. */
  socket: string;
  /** The kernel block device bound to it, e.g. /dev/nbd3; null when not bound. */
  device: string | null;
  metrics(): VolumeMetrics;
  /** Its replicas; absent where the volume is served from one blob outside a cluster (`pagedisk serve`). */
  replicas?(): ReplicaStatus[];
}

/** Everything the status API shows. */
export interface StatusSource {
  node(): NodeStatus;
  volumes(): ServedVolume[];
}
