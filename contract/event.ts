/**
 * Events: what happened in the cluster, newest first.
 */
import { z } from "zod";
import { NodeName, PoolName, Timestamp, VolumeName } from "./names.ts";

/** Event types are kebab-case words, e.g. `volume-created`, `storage-failure`. */
export const EventType = z
  .string()
  .regex(/^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$/, { error: "event type must be kebab-case" })
  .max(64);
export type EventType = z.infer<typeof EventType>;

/** The types the control plane itself records (agents report more, e.g. `storage-failure`). */
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
