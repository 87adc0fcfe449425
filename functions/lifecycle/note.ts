/**
 * Recording what happened, after it happened. An event that cannot be
 * written must not undo or fail the change it describes, so failures are
 * reported instead of thrown.
 */
import type { ControlPlaneEventType } from "../../contract/event.ts";
import type { ControlPlane } from "../control-plane.ts";
import { type NewEvent, recordEvent } from "../registry/events.ts";

/** Record `event`, one of the types the control plane lists as its own. */
export async function note(
  cp: ControlPlane,
  event: NewEvent & { type: ControlPlaneEventType },
): Promise<void> {
  cp.faults?.beforeStep(`note ${event.type}`);
  try {
    await recordEvent(cp.registry, cp.now(), event);
  } catch (err) {
    cp.report(err);
  }
}
