/**
 * What a kind of binding must provide to the binder (binder.ts), which owns
 * everything else: request checks, one operation per volume at a time, the
 * records, re-adoption. Like an nbdkit plugin, a driver is a small table of
 * operations and knows nothing of the others.
 */
import type { Binding, CheckedRequest } from "./binding.ts";

export interface DeviceDriver {
  readonly kind: Binding["kind"];
  /**
   * Bind the export. `previous` is the volume's earlier binding of this
   * kind, already detached, so that its device path can be reused where
   * the kind allows it. `record` persists an intermediate state (for
   * instance nbdfuse mounted, no loop device yet) so that a crash in the
   * middle leaves a trace. Leaves nothing behind when it throws.
   */
  attach(
    req: CheckedRequest,
    previous: Binding | null,
    record: (partial: Binding) => Promise<void>,
  ): Promise<Binding>;
  /**
   * Take over `old`, a binding an earlier run of the agent left for the
   * same attachment (the binder has checked that `req` asks for the very
   * same export, identifier and geometry), so that its device and whatever
   * holds it open carry on. Null when this kind cannot (the binder then
   * tears `old` down and binds anew). Optional: a kind without it always
   * binds anew.
   */
  adopt?(req: CheckedRequest, old: Binding): Promise<Binding | null>;
  /** Tear a binding down, whatever part of it is left; idempotent. */
  detach(binding: Binding): Promise<void>;
  /** Whether the binding's device still exists and is still this binding's. */
  present(binding: Binding): Promise<boolean>;
}
