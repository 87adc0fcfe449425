/**
 * What the agent tells about its VM (contract `NodeFacts`): flat, small,
 * informational. Only what the OS says at once; Azure's instance metadata
 * (VM size, zone) is left out so that joining never waits on IMDS, which is
 * absent outside Azure and may answer slowly inside it.
 */
import { arch, cpus, hostname, platform, release, totalmem } from "node:os";

export type Facts = Record<string, string | number | boolean>;

export function hostFacts(): Facts {
  return {
    os: platform(),
    kernel: release(),
    arch: arch(),
    cpus: cpus().length,
    memoryBytes: totalmem(),
    hostname: hostname(),
  };
}
