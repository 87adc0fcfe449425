/**
 * Events: what happened in the cluster, newest first.
 */
import { z } from "zod";
import { NodeName, PoolName, Timestamp, VolumeName } from "./names.ts";
import { REPLICAS_DIVERGED } from "./signals.ts";

/** Event types are kebab-case words, e.g. `volume-created`, `storage-failure`. */
export const EventType = z
  .string()
  .regex(/^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$/, { error: "event type must be kebab-case" })
  .max(64);
export type EventType = z.infer<typeof EventType>;

/**
 * The types an agent reports (agent/control/served-volume.ts and
 * served-replicas.ts queue them); a report carrying any other is refused.
 */
export const AGENT_EVENTS = ["volume-failed", "storage-failure", REPLICAS_DIVERGED] as const;

/** The types the control plane itself records; agents report only `AGENT_EVENTS`. */
export const CONTROL_PLANE_EVENTS = [
  "pool-registered",
  "pool-removed",
  "pool-health-changed",
  "pool-annotated",
  "pool-usage-changed",
  "pool-release-progress",
  "replica-offline",
  "replica-resync-started",
  "replica-rebuild-started",
  "replica-online",
  "replica-retired",
  "replica-repair-failed",
  "orphans-found",
  "orphans-deleted",
  "volume-created",
  "volume-updated",
  "volume-deleted",
  "volume-attached",
  "volume-detached",
  "volume-fenced",
  "volume-failed-over",
  "volume-failover-cancelled",
  "node-joined",
  "node-ready",
  "node-suspect",
  "node-lost",
  "node-cordoned",
  "node-uncordoned",
  "node-removed",
  "token-created",
  "token-revoked",
] as const;
export type ControlPlaneEventType = (typeof CONTROL_PLANE_EVENTS)[number];

/**
 * Who recorded an event: the control plane, of what it did itself, or a
 * node, in its report (that node's word, nothing more). Set by the
 * registry from the way the event came in, never from what was sent.
 * Events recorded before sources were kept have none, and are evidence of
 * nothing either.
 */
export const EVENT_SOURCES = ["control-plane", "node"] as const;
export const EventSource = z.enum(EVENT_SOURCES);
export type EventSource = z.infer<typeof EventSource>;

export const Event = z.object({
  /** Unique, and ordered newest first. */
  id: z.string(),
  at: Timestamp,
  type: EventType,
  volume: VolumeName.optional(),
  node: NodeName.optional(),
  pool: PoolName.optional(),
  message: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
  source: EventSource.optional(),
});
export type Event = z.infer<typeof Event>;

export const MAX_EVENTS_PAGE = 500;

/** `GET /api/v1/events` query. */
export const EventQuery = z.strictObject({
  volume: VolumeName.optional(),
  node: NodeName.optional(),
  type: EventType.optional(),
  limit: z.coerce.number().int().min(1).max(MAX_EVENTS_PAGE).default(100),
  /** Opaque token from the previous page's `continuation`. */
  continuation: z.string().max(512).optional(),
});
export type EventQuery = z.infer<typeof EventQuery>;

export const EventPage = z.object({
  items: z.array(Event),
  /** Pass as `continuation` to get the next page; null when there is none. */
  continuation: z.string().nullable(),
});
export type EventPage = z.infer<typeof EventPage>;
