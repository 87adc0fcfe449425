/**
 * Records as the API shows them. What a client must never see is dropped
 * here, in one place: pool secrets (connection strings are masked) and
 * volume lease ids (only the owner node gets its lease, through its own
 * endpoint), node credential hashes and liveness keys.
 */
import type { Node } from "../../contract/node.ts";
import type { Pool } from "../../contract/pool.ts";
import type { Volume } from "../../contract/volume.ts";
import { lastBeatOf, type LivenessRow } from "../registry/liveness.ts";
import { generationOf, type NodeRecord } from "../registry/nodes.ts";
import type { PoolRecord } from "../registry/pools.ts";
import type { VolumeRecord } from "../registry/volumes.ts";
import { poolAuthView } from "../storage/pool-auth.ts";

export function poolView(p: PoolRecord): Pool {
  return {
    name: p.name,
    account: p.account,
    blobEndpoint: p.blobEndpoint,
    container: p.container,
    auth: poolAuthView(p),
    health: p.health,
    ...(p.healthSince === undefined ? {} : { healthSince: p.healthSince }),
    ...(p.healthReason === undefined ? {} : { healthReason: p.healthReason }),
    usage: p.usage,
    annotations: p.annotations,
    createdAt: p.createdAt,
  };
}

export function volumeView(v: VolumeRecord): Volume {
  return {
    name: v.name,
    spec: v.spec,
    status: v.status,
    createdAt: v.createdAt,
    updatedAt: v.updatedAt,
  };
}

/** The last heartbeat a node's liveness row shows at `nowMs`; none before its agent's first. */
export function shownBeat(row: LivenessRow | undefined, nowMs: number): number | undefined {
  return row?.at === undefined ? undefined : lastBeatOf(row, nowMs);
}

/** A node as an admin sees it, with its last heartbeat (`shownBeat`). */
export function nodeView(n: NodeRecord, lastBeatMs: number | undefined): Node {
  return {
    name: n.name,
    state: n.state,
    cordoned: n.cordoned,
    agentVersion: n.agentVersion,
    facts: n.facts,
    volumes: n.volumes,
    joinedAt: n.joinedAt,
    lastHeartbeatAt: lastBeatMs === undefined ? null : new Date(lastBeatMs).toISOString(),
    lastReportAt: n.lastReportAt,
    desiredGeneration: generationOf(n),
  };
}
