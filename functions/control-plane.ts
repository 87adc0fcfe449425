/**
 * What routes and workflows share: the registry, the clock and where
 * unexpected errors are reported. Built once per app by `createApp`.
 */
import type { ReportError } from "./http/errors.ts";
import type { Registry } from "./registry/tables.ts";

export interface ControlPlane {
  readonly registry: Registry;
  /** The clock; tests pass a fixed or stepping one. */
  readonly now: () => Date;
  readonly report: ReportError;
}
