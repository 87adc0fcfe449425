/**
 * Volume attachment states. A volume is written by at most its `ownerNode`,
 * and only while it holds the lease that the move to ATTACHING/ATTACHED
 * recorded; every move that changes the writer also raises the epoch.
 *
 *   CREATING  -> DETACHED (blobs made) | DELETING (creation rolled back)
 *   DETACHED  -> ATTACHING | DELETING
 *   ATTACHING -> ATTACHED (lease taken) | DETACHED (rolled back) | DELETING (forced)
 *   ATTACHED  -> DETACHING | FENCING (owner lost) | DELETING (forced)
 *   DETACHING -> DETACHED | DELETING (forced)
 *   FENCING   -> ATTACHING (automatic failover) | DETACHED (manual policy) | DELETING (forced)
 *   DELETING  -> (row removed once the blobs are gone)
 */
import type { VolumeState } from "../../contract/volume.ts";
import { stateMachine } from "./state-machine.ts";

export const volumeStates = stateMachine<VolumeState>("volume", {
  CREATING: ["DETACHED", "DELETING"],
  DETACHED: ["ATTACHING", "DELETING"],
  ATTACHING: ["ATTACHED", "DETACHED", "DELETING"],
  ATTACHED: ["DETACHING", "FENCING", "DELETING"],
  DETACHING: ["DETACHED", "DELETING"],
  FENCING: ["ATTACHING", "DETACHED", "DELETING"],
  DELETING: [],
});

/** States in which some node may hold (or be about to hold) the volume's lease. */
export const ATTACHED_STATES: readonly VolumeState[] = [
  "ATTACHING",
  "ATTACHED",
  "DETACHING",
  "FENCING",
];
