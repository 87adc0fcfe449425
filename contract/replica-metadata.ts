/**
 * Metadata on every replica blob, written by the control plane and the
 * agent alike:
 *
 *   pagediskvolume        the volume it belongs to (orphans are traced by it)
 *   pagediskreplica       its replica id
 *   pagediskoffline       comma-separated ids of replicas that miss writes
 *                         this one has (the agent's durable offline mark)
 *   pagediskofflineepoch  the epoch that wrote that mark
 */
export const VOLUME_KEY = "pagediskvolume";
export const REPLICA_KEY = "pagediskreplica";
export const OFFLINE_KEY = "pagediskoffline";
export const OFFLINE_EPOCH_KEY = "pagediskofflineepoch";

/** The replica ids an offline mark names. */
export function markedOffline(metadata: Readonly<Record<string, string | undefined>>): string[] {
  const list = metadata[OFFLINE_KEY];
  if (!list) return [];
  return list
    .split(",")
    .map((id) => id.trim())
    .filter((id) => id !== "");
}
