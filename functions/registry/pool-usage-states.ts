/**
 * Pool usage (DESIGN.md, "Health, repair, replacement"). Replacement goes
 * IN_USE -> RELEASING -> RELEASED -> REMOVING -> REMOVED, or FAILED when a
 * replica cannot be moved off. A pool that holds no replica may go straight
 * to REMOVING; removal that finds a replica after all goes back to where
 * it came from (IN_USE or RELEASED).
 * REMOVED is the last word: the row is deleted right after.
 *
 * What moves it: `action=remove` or `POST .../release` (IN_USE or FAILED
 * -> RELEASING, lifecycle/release-pool.ts); the replacement pass
 * (health/replacement.ts: RELEASING -> RELEASED or FAILED); `action=add`
 * (RELEASING, RELEASED or FAILED -> IN_USE; never REMOVING -> IN_USE,
 * which only a refused removal takes); `removal=ready` or `DELETE` on a
 * RELEASED pool, `DELETE` on an empty IN_USE one (-> REMOVING -> REMOVED,
 * lifecycle/remove-pool.ts).
 */
import type { PoolUsage } from "../../contract/pool.ts";
import { stateMachine } from "./state-machine.ts";

export const poolUsageStates = stateMachine<PoolUsage>("pool usage", {
  IN_USE: ["RELEASING", "REMOVING"],
  RELEASING: ["RELEASED", "FAILED", "IN_USE"],
  RELEASED: ["REMOVING", "IN_USE"],
  REMOVING: ["REMOVED", "IN_USE", "RELEASED"],
  REMOVED: [],
  FAILED: ["IN_USE", "RELEASING"],
});
