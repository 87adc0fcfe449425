/**
 * Volume creation, in recorded steps:
 *
 * 1. insert the row as CREATING, replicas placed (one winner per name);
 * 2. check the chosen pools still take replicas: pool removal marks a pool
 *    REMOVING before it looks for replicas, and creation writes its replicas
 *    before it looks at the pool, so one of the two always sees the other;
 * 3. create the page blobs;
 * 4. move to DETACHED.
 *
 * A failure in 2-3 rolls back through DELETING; a crash leaves a CREATING
 * row that a forced delete (or the sweeper) removes with its blobs.
 */
import { randomBytes } from "node:crypto";
import type { VolumeCreate } from "../../contract/volume.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { type PoolRecord, pools } from "../registry/pools.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import { movedReplica } from "../registry/replica-states.ts";
import { volumeStates } from "../registry/volume-states.ts";
import { type VolumeRecord, volumes } from "../registry/volumes.ts";
import { createReplicaBlob, replicaUri } from "../storage/replica-blobs.ts";
import { destroyVolume, markDeleting } from "./destroy-volume.ts";
import { note } from "./note.ts";
import { placeReplicas, replicasPerPool, takesReplicas } from "./placement.ts";

export async function createVolume(cp: ControlPlane, request: VolumeCreate): Promise<VolumeRecord> {
  const volumeTable = volumes(cp.registry);
  const poolTable = pools(cp.registry);
  const { name, ...spec } = request;
  if (await volumeTable.get(name)) throw exists(name);
  const [allPools, allVolumes] = await Promise.all([poolTable.list(), volumeTable.list()]);
  const chosen = placeReplicas(
    spec,
    allPools.map((p) => p.value),
    replicasPerPool(allVolumes.map((v) => v.value)),
  );

  const createdAt = cp.now().toISOString();
  const creating: VolumeRecord = {
    name,
    spec,
    status: {
      state: "CREATING",
      ownerNode: null,
      epoch: 0,
      replicas: chosen.map((pool) => {
        const id = randomBytes(6).toString("hex");
        return { id, pool: pool.name, uri: replicaUri(pool, name, id), state: "CREATING" };
      }),
    },
    leaseId: null,
    createdAt,
    updatedAt: createdAt,
  };
  let etag: string;
  try {
    etag = await volumeTable.insert(creating);
  } catch (err) {
    throw isRegistryError(err, "Exists") ? exists(name) : err;
  }

  try {
    await checkStillUsable(cp, chosen);
    const byName = new Map(chosen.map((p) => [p.name, p]));
    const outcomes = await Promise.allSettled(
      creating.status.replicas.map((r) =>
        createReplicaBlob(byName.get(r.pool)!, name, r.id, spec.sizeBytes),
      ),
    );
    const failed = outcomes.find((o) => o.status === "rejected");
    if (failed) throw failed.reason;
  } catch (err) {
    await rollBack(cp, { value: creating, etag });
    throw err;
  }

  volumeStates.check("CREATING", "DETACHED");
  const at = cp.now();
  const ready: VolumeRecord = {
    ...creating,
    status: {
      ...creating.status,
      state: "DETACHED",
      replicas: creating.status.replicas.map((r) => movedReplica(r, "ONLINE", at)),
    },
    updatedAt: at.toISOString(),
  };
  // A Conflict here means a forced delete took the CREATING row: that delete wins.
  await volumeTable.replace(ready, etag);
  await note(cp, {
    type: "volume-created",
    volume: name,
    message: `volume ${name} created: ${spec.sizeBytes} bytes, replicas on ${chosen.map((p) => p.name).join(", ")}`,
    data: { sizeBytes: spec.sizeBytes, pools: chosen.map((p) => p.name) },
  });
  return ready;
}

async function checkStillUsable(cp: ControlPlane, chosen: readonly PoolRecord[]): Promise<void> {
  const fresh = await Promise.all(chosen.map((p) => pools(cp.registry).get(p.name)));
  const gone = chosen
    .map((p) => p.name)
    .filter((_name, i) => {
      const read = fresh[i];
      return !read || !takesReplicas(read.value);
    });
  if (gone.length > 0) {
    throw new ApiError("PoolNotUsable", `pool ${gone.join(", ")} stopped taking replicas`, {
      pools: gone,
    });
  }
}

/** Undo a failed creation; if even that fails, the CREATING/DELETING row stays for the next delete or sweep. */
async function rollBack(
  cp: ControlPlane,
  read: { value: VolumeRecord; etag: string },
): Promise<void> {
  try {
    await destroyVolume(cp, await markDeleting(cp, read));
  } catch (err) {
    cp.report(err);
  }
}

function exists(name: string): ApiError {
  return new ApiError("VolumeExists", `volume ${name} already exists`, { volume: name });
}
