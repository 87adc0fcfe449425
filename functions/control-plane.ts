/**
 * What routes and workflows share: the registry, the clock and where
 * unexpected errors are reported. Built once per app by `createApp`, and
 * once per host for the timers.
 */
import { DEFAULT_HEARTBEAT_INTERVAL_MS } from "./health/liveness-judge.ts";
import type { ReportError } from "./http/errors.ts";
import { DEFAULT_EVENT_RETENTION_DAYS } from "./registry/events.ts";
import type { Registry } from "./registry/tables.ts";
import { MAX_REPLICA_SAS_LIFETIME_MS } from "./storage/replica-sas.ts";

/** A detach's longest wait for the owner's drain: a throttle pause or two, and a flush. */
export const DEFAULT_DETACH_DRAIN_MS = 15_000;
/**
 * The most it may be set to: well under the minute after which the sweeper
 * takes a DETACHING volume for a detach that died and finishes it without
 * waiting (health/sweep.ts).
 */
export const MAX_DETACH_DRAIN_MS = 45_000;

/**
 * Whether pools may be registered with a connection string, which carries
 * an account key or a SAS (lifecycle/register-pool.ts): `refuse` leaves
 * managed-identity pools only.
 */
export type PoolAccountKeys = "refuse" | "allow";

export interface ControlPlane {
  readonly registry: Registry;
  /** The clock; tests pass a fixed or stepping one. */
  readonly now: () => Date;
  readonly report: ReportError;
  /** How long the SAS handed to agents is valid (settings' `replicaSasLifetimeMs`). */
  readonly replicaSasLifetimeMs: number;
  /** Longest a detach waits for the owner to drain the volume (settings' `detachDrainMs`). */
  readonly detachDrainMs: number;
  /** How often agents are told to beat (settings' sweep policy). */
  readonly heartbeatIntervalMs: number;
  /** Days of events listed and kept (settings' `eventRetentionDays`). */
  readonly eventRetentionDays: number;
  /** Whether key-bearing pools may be registered (settings' `poolAccountKeys`). */
  readonly poolAccountKeys: PoolAccountKeys;
  /** Tests only: crash injection between the steps of attach, detach and fencing. */
  readonly faults?: Faults;
}

/**
 * A seam for crash-injection tests, absent in production. `beforeStep` is
 * called just before each durable step (a registry write, a lease call on
 * one replica, an event) of attach, detach and fencing, with the step's
 * name; throwing there stands for the process dying between the previous
 * step and this one. A hook that keeps throwing once it has thrown makes
 * every later step, roll-backs included, fail as a dead process would.
 */
export interface Faults {
  readonly beforeStep: (step: string) => void;
}

export interface ControlPlaneOptions {
  registry: Registry;
  /** Clock; defaults to the system's. */
  now?: () => Date;
  /** Where unexpected errors go; defaults to stderr. */
  report?: ReportError;
  /** Lifetime of agents' SAS; defaults to the longest, 15 minutes. */
  replicaSasLifetimeMs?: number;
  /** Longest a detach waits for the owner's drain; defaults to DEFAULT_DETACH_DRAIN_MS. */
  detachDrainMs?: number;
  /** How often agents beat; defaults to DEFAULT_HEARTBEAT_INTERVAL_MS. */
  heartbeatIntervalMs?: number;
  /** Days of events listed and kept; defaults to DEFAULT_EVENT_RETENTION_DAYS. */
  eventRetentionDays?: number;
  /**
   * Whether key-bearing pools may be registered; defaults to `allow`. The
   * hosts decide for themselves: `refuse` under the Functions host unless
   * set (index.ts), `allow` on the local stack (local.ts).
   */
  poolAccountKeys?: PoolAccountKeys;
  /** Crash injection, for tests only. */
  faults?: Faults;
}

/** A control plane with the system clock and stderr unless told otherwise. */
export function controlPlane(options: ControlPlaneOptions): ControlPlane {
  return {
    registry: options.registry,
    now: options.now ?? (() => new Date()),
    report: options.report ?? ((err) => console.error("pagedisk control plane:", err)),
    replicaSasLifetimeMs: options.replicaSasLifetimeMs ?? MAX_REPLICA_SAS_LIFETIME_MS,
    detachDrainMs: options.detachDrainMs ?? DEFAULT_DETACH_DRAIN_MS,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS,
    eventRetentionDays: options.eventRetentionDays ?? DEFAULT_EVENT_RETENTION_DAYS,
    poolAccountKeys: options.poolAccountKeys ?? "allow",
    ...(options.faults ? { faults: options.faults } : {}),
  };
}
