/**
 * A node row as the registry keeps it, for tests that write one directly or
 * hand one to a pure function: READY, not cordoned, no facts, no volumes,
 * joined 2025-01-01, never heard from; `extra` overrides any of that.
 */
import type { NodeRecord } from "../../functions/registry/nodes.ts";

export function nodeRecord(name: string, extra: Partial<NodeRecord> = {}): NodeRecord {
  return {
    name,
    state: "READY",
    cordoned: false,
    agentVersion: null,
    facts: {},
    volumes: [],
    credentialSha256: "0".repeat(64),
    joinedAt: "2025-01-01T00:00:00.000Z",
    lastReportAt: null,
    ...extra,
  };
}
