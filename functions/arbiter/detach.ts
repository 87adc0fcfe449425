/**
 * Detach: leave a volume with no writer.
 *
 * 1. ATTACHED -> DETACHING with epoch + 1, by conditional write;
 * 2. wait for the former owner to drain the volume (detach-drain.ts), unless
 *    `force`;
 * 3. drop the lease on every replica (release ours, break any other), which
 *    fences the former owner at its next write;
 * 4. DETACHING -> DETACHED.
 *
 * Right after 1 the former owner's desired-state generation is bumped: the
 * volume left its desired state with that write, and the agent stops
 * serving it: it lets the requests in flight finish on every replica,
 * flushes and closes the export, and says so in its next heartbeat, which
 * is what 2 waits for (at most `cp.detachDrainMs`). Dropping the leases
 * under writes in flight would leave replicas that differ where those
 * writes reached some and not others. The `volume-detached` event says
 * whether the drain was confirmed, and if not, why.
 *
 * A DETACHING record (storage failure or crash in 2 or 3) is resumed by the
 * next detach. Two detaches of one volume at once (a second request while
 * the first waits for the drain) both wait, and the one that finds the
 * other has finished answers with its result. Detaching a DETACHED volume
 * is a no-op, except that it clears the
 * failover mark (`status.failoverPending`): an operator who detaches a
 * volume wants it left detached, so the sweeper stops placing it. That is
 * recorded as a `volume-failover-cancelled` event, so the log says why a
 * volume that was failing over stayed where it was.
 */
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { note } from "../lifecycle/note.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import { forgetOwner } from "../registry/owners.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { volumeStates } from "../registry/volume-states.ts";
import { type VolumeRecord, volumes, withFailoverPending } from "../registry/volumes.ts";
import { bumpDesiredGeneration } from "./desired-generation.ts";
import { awaitDrain, type DrainOutcome } from "./detach-drain.ts";
import { dropLeases } from "./replica-leases.ts";

export interface DetachOptions {
  /** Drop the leases at once, without waiting for the owner to drain; the reason is recorded. */
  skipDrain?: string;
}

export async function detachVolume(
  cp: ControlPlane,
  name: string,
  options: DetachOptions = {},
): Promise<VolumeRecord> {
  const { claim, failoverCancelled } = await retryOnConflict(() => claimVolume(cp, name));
  if (failoverCancelled) {
    await note(cp, {
      type: "volume-failover-cancelled",
      volume: name,
      message: `volume ${name} detached by request: the failover it was owed is cancelled`,
      data: { reason: "detached" },
    });
  }
  if (claim.value.status.state === "DETACHED") return claim.value;
  const owner = claim.value.status.ownerNode;
  // Also when resuming a DETACHING left by a crash, which may have come before the bump.
  let drain: DrainOutcome | undefined;
  if (owner !== null) {
    const generation = await bumpDesiredGeneration(cp, owner, "detached");
    drain =
      options.skipDrain !== undefined
        ? { drained: false, reason: options.skipDrain, waitedMs: 0 }
        : await awaitDrain(cp, owner, name, generation);
  }

  await dropLeases(cp, claim.value, claim.value.leaseId);

  volumeStates.check("DETACHING", "DETACHED");
  const detached: VolumeRecord = {
    ...claim.value,
    status: withFailoverPending(
      { ...claim.value.status, state: "DETACHED", ownerNode: null },
      false,
    ),
    leaseId: null,
    updatedAt: cp.now().toISOString(),
  };
  cp.faults?.beforeStep("mark-detached");
  const table = volumes(cp.registry);
  try {
    const etag = await table.replace(detached, claim.etag);
    if (owner !== null) await forgetOwner(cp.registry, owner, name, etag).catch(cp.report);
  } catch (err) {
    if (!isRegistryError(err, "Conflict")) throw err;
    // Another detach of the same claim got there first: its outcome is ours.
    const now = (await table.get(name))?.value;
    if (now?.status.state === "DETACHED" && now.status.epoch === claim.value.status.epoch) return now;
    throw err;
  }
  await note(cp, {
    type: "volume-detached",
    volume: name,
    ...(owner === null ? {} : { node: owner }),
    message:
      `volume ${name} detached${owner === null ? "" : ` from ${owner}`}` +
      (drain === undefined || drain.drained
        ? ""
        : ` without its drain confirmed (${drain.reason}): writes in flight may have reached some replicas only`),
    ...(drain === undefined ? {} : { data: { ...drain } }),
  });
  return detached;
}

/** Step 1's outcome; `failoverCancelled` when it cleared a DETACHED volume's failover mark. */
interface Claim {
  claim: Read<VolumeRecord>;
  failoverCancelled: boolean;
}

async function claimVolume(cp: ControlPlane, name: string): Promise<Claim> {
  const table = volumes(cp.registry);
  const read = await table.get(name);
  if (!read) throw new ApiError("VolumeNotFound", `no volume named ${name}`, { volume: name });
  const v = read.value;
  const { state, ownerNode } = v.status;
  if (state === "DETACHED" && v.status.failoverPending === true) {
    const cleared: VolumeRecord = {
      ...v,
      status: withFailoverPending(v.status, false),
      updatedAt: cp.now().toISOString(),
    };
    const etag = await table.replace(cleared, read.etag);
    return { claim: { value: cleared, etag }, failoverCancelled: true };
  }
  if (state === "DETACHED" || state === "DETACHING") {
    return { claim: read, failoverCancelled: false };
  }
  if (state !== "ATTACHED") {
    throw new ApiError("VolumeBusy", `volume ${name} is ${state}; retry later`, {
      state,
      ownerNode,
    });
  }
  volumeStates.check(state, "DETACHING");
  const next: VolumeRecord = {
    ...v,
    status: { ...v.status, state: "DETACHING", epoch: v.status.epoch + 1 },
    updatedAt: cp.now().toISOString(),
  };
  cp.faults?.beforeStep("claim");
  const etag = await table.replace(next, read.etag);
  return { claim: { value: next, etag }, failoverCancelled: false };
}
