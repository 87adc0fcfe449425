/**
 * Events: `/api/v1/events`, newest first, filtered and paginated.
 */
import { EventPage, EventQuery } from "../../contract/event.ts";
import type { ControlPlane } from "../control-plane.ts";
import { invalidInput } from "../http/input.ts";
import { type Operation, operation } from "../http/operation.ts";
import { listEvents, positionOf } from "../registry/events.ts";

export function eventOperations(cp: ControlPlane): Operation[] {
  return [
    operation({
      method: "get",
      path: "/events",
      operationId: "listEvents",
      summary: "List events newest first, by volume, node or type",
      access: "admin",
      query: EventQuery,
      success: { status: 200, description: "one page of events", schema: EventPage },
      handle: async ({ query }) => {
        const { continuation, limit, ...filter } = query;
        const after = continuation === undefined ? undefined : positionOf(continuation);
        if (continuation !== undefined && !after)
          throw invalidInput("query.continuation", "not a token this API gave out");
        return listEvents(
          cp.registry,
          filter,
          { limit, after },
          { now: cp.now(), retentionDays: cp.eventRetentionDays },
        );
      },
    }),
  ];
}
