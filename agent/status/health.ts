/**
 * GET /healthz: the agent is running, and what is wrong if anything is.
 *
 * Always 200 while the process answers. This endpoint says whether the
 * agent is alive, not whether everything it serves is well: a supervisor
 * that restarted the agent on a failed volume or an unreachable control
 * plane would fix neither, and would cut the I/O of every healthy volume on
 * the node (the data path does not need the control plane). What is wrong
 * is listed in `problems`, with stable codes, for humans and alerting.
 */
import type { StatusSource } from "./source.ts";

/** Stable codes of what /healthz reports. */
export type ProblemCode = "VolumeFailed" | "VolumeDegraded" | "ControlPlaneUnreachable";

export interface Problem {
  code: ProblemCode;
  message: string;
  volume?: string;
}

export interface HealthReport {
  status: "ok";
  node: { name: string | null; version: string };
  controlPlane: { url: string; connected: boolean; lastHeartbeatAt: string | null };
  volumes: { serving: number; degraded: number; failed: number; stopped: number };
  problems: Problem[];
}

/** The body of GET /healthz. */
export function healthReport(source: StatusSource): HealthReport {
  const node = source.node();
  const volumes = { serving: 0, degraded: 0, failed: 0, stopped: 0 };
  const problems: Problem[] = [];
  for (const v of source.volumes()) {
    switch (v.state) {
      case "SERVING":
        volumes.serving++;
        break;
      case "DEGRADED":
        volumes.degraded++;
        problems.push({
          code: "VolumeDegraded",
          volume: v.name,
          message: `volume ${v.name} is serving with a replica offline`,
        });
        break;
      case "FAILED":
        volumes.failed++;
        problems.push({
          code: "VolumeFailed",
          volume: v.name,
          message: `volume ${v.name} has failed; its clients get EIO`,
        });
        break;
      case "STOPPED":
        volumes.stopped++;
        break;
    }
  }
  // Without a control plane (`pagedisk serve`) there is nothing to reach.
  if (node.controlPlane !== "" && !node.connected) {
    problems.push({
      code: "ControlPlaneUnreachable",
      message: `the last heartbeat to the control plane at ${node.controlPlane} did not land${
        node.lastHeartbeatAt ? ` (last accepted ${node.lastHeartbeatAt})` : ""
      }`,
    });
  }
  return {
    status: "ok",
    node: { name: node.name, version: node.version },
    controlPlane: {
      url: node.controlPlane,
      connected: node.connected,
      lastHeartbeatAt: node.lastHeartbeatAt,
    },
    volumes,
    problems,
  };
}
