/**
 * What routes and workflows share: the registry, the clock and where
 * unexpected errors are reported. Built once per app by `createApp`, and
 * once per host for the timers.
 */
import type { ReportError } from "./http/errors.ts";
import type { Registry } from "./registry/tables.ts";

export interface ControlPlane {
  readonly registry: Registry;
  /** The clock; tests pass a fixed or stepping one. */
  readonly now: () => Date;
  readonly report: ReportError;
}

export interface ControlPlaneOptions {
  registry: Registry;
  /** Clock; defaults to the system's. */
  now?: () => Date;
  /** Where unexpected errors go; defaults to stderr. */
  report?: ReportError;
}

/** A control plane with the system clock and stderr unless told otherwise. */
export function controlPlane(options: ControlPlaneOptions): ControlPlane {
  return {
    registry: options.registry,
    now: options.now ?? (() => new Date()),
    report: options.report ?? ((err) => console.error("pagedisk control plane:", err)),
  };
}
