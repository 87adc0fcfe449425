/**
 * Attach: make one node the only writer of a volume.
 *
 * 1. DETACHED -> ATTACHING with epoch + 1, the node and a fresh lease id,
 *    by conditional write: among racing requests exactly one wins, the
 *    others re-read and are told who the owner is. The lease id is recorded
 *    before any lease exists, so a crash never leaves a lease nobody knows.
 * 2. Lease every replica under that id, breaking (period 0) any other lease:
 *    whoever wrote before is fenced by the storage service from here on,
 *    and so is the control plane's own server-side copying of a detached
 *    volume, whose copies still pending are then stopped
 *    (health/repair-detached.ts): the writer copies what they had left.
 * 3. ATTACHING -> ATTACHED.
 * 4. Bump the node's desired-state generation, so that its agent learns of
 *    the volume at once (arbiter/desired-generation.ts).
 *
 * A storage failure in 2 rolls back to DETACHED (leases dropped). A crash
 * between steps leaves ATTACHING, which the sweeper rolls back. With
 * several replicas, a pool that cannot be reached does not stop the attach
 * once an ONLINE replica is leased: its replica is recorded OFFLINE in step
 * 3 (`replica-offline`), and repaired when the pool is back (arbiter/replica-leases.ts).
 *
 * An operator's attach clears the failover mark (`status.failoverPending`):
 * the operator has taken the volume over from the sweeper. An attach the
 * sweeper makes keeps the mark until ATTACHED, so a roll-back leaves the
 * volume still owed its failover.
 */
import { randomUUID } from "node:crypto";
import type { Attachment } from "../../contract/attachment.ts";
import type { Replica } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { stopServerCopies } from "../health/repair-detached.ts";
import { ApiError } from "../http/api-error.ts";
import { note } from "../lifecycle/note.ts";
import { nodes } from "../registry/nodes.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import { retryOnConflict } from "../registry/retry.ts";
import type { Read } from "../registry/rows.ts";
import { forgetOwner, noteOwner } from "../registry/owners.ts";
import { ATTACHED_STATES, volumeStates } from "../registry/volume-states.ts";
import { MAX_WRITERS } from "../../contract/volume.ts";
import { type VolumeRecord, volumes, withFailoverPending } from "../registry/volumes.ts";
import { placeAttachment } from "./attach-placement.ts";
import { bumpDesiredGeneration } from "./desired-generation.ts";
import {
  dropLeases,
  takeLeases,
  type UnreachableReplica,
  withUnreachableOffline,
} from "./replica-leases.ts";

/** Attach `name` to `node`, or, when none is named, to the node failover would choose. */
export async function attachVolume(
  cp: ControlPlane,
  name: string,
  named: string | undefined,
): Promise<Attachment> {
  const node = named ?? (await placeAttachment(cp, name));
  await checkNode(cp, node);
  const claim = await retryOnConflict(() => claimVolume(cp, name, node));
  if (claim.value.status.state === "ATTACHED") return attachmentOf(claim.value);
  const attached = await completeAttach(cp, claim);
  await note(cp, {
    type: "volume-attached",
    volume: name,
    node,
    message: `volume ${name} attached to ${node} (epoch ${attached.status.epoch})`,
    data: { epoch: attached.status.epoch },
  });
  return attachmentOf(attached);
}

/**
 * Steps 2 to 4 for a volume claimed as ATTACHING (by attach or by the
 * sweeper's failover): lease every replica, record ATTACHED, bump the
 * owner's generation. A storage failure rolls back to DETACHED and is thrown.
 */
export async function completeAttach(
  cp: ControlPlane,
  claim: Read<VolumeRecord>,
): Promise<VolumeRecord> {
  const name = claim.value.name;
  const leaseId = claim.value.leaseId!;
  let unreachable: UnreachableReplica[];
  let copied: Replica[];
  try {
    unreachable = await takeLeases(cp, claim.value, leaseId);
    const skip = new Set(unreachable.map((u) => u.id));
    copied = await stopServerCopies(cp, claim.value, leaseId, skip);
  } catch (err) {
    await rollBackAttach(cp, claim, leaseId);
    throw err;
  }

  volumeStates.check("ATTACHING", "ATTACHED");
  const now = cp.now();
  const replicas = withUnreachableOffline(copied, unreachable, now, "when attached");
  // The copies the control plane ran while the volume was detached are over: its lease is broken.
  const { copyLeaseId: _over, ...claimed } = claim.value;
  const attached: VolumeRecord = {
    ...claimed,
    // The leases, and with them the SAS policies, are in place now (desired-state.ts times its
    // SAS from here).
    policiesSetAt: now.toISOString(),
    status: withFailoverPending(
      {
        ...claim.value.status,
        state: "ATTACHED",
        replicas,
        writers: [
          { node: claim.value.status.ownerNode!, epoch: claim.value.status.epoch },
          ...(claim.value.status.writers ?? []),
        ].slice(0, MAX_WRITERS),
      },
      false,
    ),
    updatedAt: now.toISOString(),
  };
  try {
    cp.faults?.beforeStep("mark-attached");
    await volumes(cp.registry).replace(attached, claim.etag);
  } catch (err) {
    if (!isRegistryError(err)) throw err;
    // Only a forced delete or the sweeper's roll-back touch an ATTACHING record: they won.
    throw new ApiError(
      "Conflict",
      `volume ${name} changed while being attached; it is not attached`,
      {
        volume: name,
      },
    );
  }
  await bumpDesiredGeneration(cp, attached.status.ownerNode!, "attached");
  await noteOffline(cp, claim.value, attached);
  return attached;
}

/** A `replica-offline` event for each replica that `after` records OFFLINE and `before` did not. */
export async function noteOffline(
  cp: ControlPlane,
  before: VolumeRecord,
  after: VolumeRecord,
): Promise<void> {
  for (const r of after.status.replicas) {
    const was = before.status.replicas.find((b) => b.id === r.id);
    if (r.state !== "OFFLINE" || !was || was.state === "OFFLINE") continue;
    await note(cp, {
      type: "replica-offline",
      volume: after.name,
      pool: r.pool,
      ...(after.status.ownerNode === null ? {} : { node: after.status.ownerNode }),
      message: `volume ${after.name}: replica ${r.id} on ${r.pool} is OFFLINE: ${r.message ?? ""}`,
      // Stale: put OFFLINE because its writer was lost (fence.ts), not for anything its pool did.
      data: { replica: r.id, ...(r.stale ? { stale: true } : {}) },
    });
  }
}

/** The node must exist, be READY and not cordoned. */
async function checkNode(cp: ControlPlane, node: string): Promise<void> {
  const read = await nodes(cp.registry).get(node);
  if (!read) throw new ApiError("NodeNotFound", `no node named ${node}`, { node });
  const { state, cordoned } = read.value;
  if (state !== "READY" || cordoned) {
    throw new ApiError("NodeNotEligible", `node ${node} is ${cordoned ? "cordoned" : state}`, {
      node,
      state,
      cordoned,
    });
  }
}

/**
 * Step 1, decided on a fresh read. Returns the ATTACHING record to carry on
 * with, or the ATTACHED one when `node` already owns the volume.
 */
async function claimVolume(
  cp: ControlPlane,
  name: string,
  node: string,
): Promise<Read<VolumeRecord>> {
  const table = volumes(cp.registry);
  const read = await table.get(name);
  if (!read) throw new ApiError("VolumeNotFound", `no volume named ${name}`, { volume: name });
  const v = read.value;
  const { state, ownerNode } = v.status;
  if (state === "ATTACHED" && ownerNode === node) return read;
  if (ATTACHED_STATES.includes(state) && ownerNode !== node) {
    throw new ApiError("VolumeAttached", `volume ${name} is ${state} on ${ownerNode}`, {
      state,
      ownerNode,
    });
  }
  if (state !== "DETACHED") {
    throw new ApiError("VolumeBusy", `volume ${name} is ${state}; retry later`, {
      state,
      ownerNode,
    });
  }
  if (v.spec.requiredNodes.length > 0 && !v.spec.requiredNodes.includes(node)) {
    throw new ApiError(
      "NodeNotEligible",
      `volume ${name} may only attach to ${v.spec.requiredNodes.join(", ")}`,
      {
        node,
        requiredNodes: v.spec.requiredNodes,
      },
    );
  }
  volumeStates.check(state, "ATTACHING");
  const next: VolumeRecord = {
    ...v,
    status: withFailoverPending(
      { ...v.status, state: "ATTACHING", ownerNode: node, epoch: v.status.epoch + 1 },
      false,
    ),
    leaseId: randomUUID(),
    updatedAt: cp.now().toISOString(),
  };
  // Before the claim, never after: the owner index may hold more than the truth, never less.
  await noteOwner(cp.registry, node, name);
  cp.faults?.beforeStep("claim");
  return { value: next, etag: await table.replace(next, read.etag) };
}

/**
 * Undo a failed step 2 (or an ATTACHING left by a crash); the failover mark
 * is kept. Returns the DETACHED record, or undefined when that failed too
 * and ATTACHING stays for the sweeper.
 */
export async function rollBackAttach(
  cp: ControlPlane,
  claim: Read<VolumeRecord>,
  leaseId: string,
): Promise<Read<VolumeRecord> | undefined> {
  try {
    await dropLeases(cp, claim.value, leaseId);
    volumeStates.check("ATTACHING", "DETACHED");
    const detached: VolumeRecord = {
      ...claim.value,
      status: { ...claim.value.status, state: "DETACHED", ownerNode: null },
      leaseId: null,
      updatedAt: cp.now().toISOString(),
    };
    cp.faults?.beforeStep("roll-back");
    const etag = await volumes(cp.registry).replace(detached, claim.etag);
    const owner = claim.value.status.ownerNode;
    if (owner !== null) await forgetOwner(cp.registry, owner, claim.value.name, etag).catch(cp.report);
    return { value: detached, etag };
  } catch (err) {
    cp.report(err);
    return undefined;
  }
}

function attachmentOf(v: VolumeRecord): Attachment {
  return { volume: v.name, node: v.status.ownerNode!, epoch: v.status.epoch, leaseId: v.leaseId! };
}
