/**
 * The KernelBinder over one DeviceDriver: checks requests, runs one
 * operation per volume at a time, records every binding in the state dir
 * before returning it, and re-adopts what an earlier run left.
 *
 * Re-adoption: a volume bound in this run is returned as is when asked for
 * again with the same export and identifier. A volume recorded by an earlier
 * run for the same export and identifier (the same attachment) is offered
 * to the driver to adopt: fuse-loop does, through its relay, which held
 * the device's requests while no agent served them (fuse-loop-driver.ts).
 * Otherwise it is torn down and bound again, because the earlier run's NBD
 * server (and with it every connection the device had) died with that run;
 * the driver may reuse the device path (nbd does). Records of the other
 * kind (the host gained or lost the nbd driver between runs) are torn down
 * by that kind's driver.
 */
import { lstat } from "node:fs/promises";
import type { Logger } from "../log.ts";
import {
  type Binding,
  type BindRequest,
  type CheckedRequest,
  checkBindRequest,
  isVolumeName,
  type KernelBinder,
} from "./binding.ts";
import type { DeviceDriver } from "./device-driver.ts";
import { BindError } from "./errors.ts";
import { BindingRecords } from "./records.ts";
import { VolumeQueue } from "./volume-queue.ts";

export interface BinderOptions {
  stateDir: string;
  /** Connections when a request does not say. */
  defaultConnections: number;
  log: Logger;
}

export class Binder implements KernelBinder {
  readonly kind: DeviceDriver["kind"];
  readonly #driver: DeviceDriver;
  readonly #drivers: Record<Binding["kind"], DeviceDriver>;
  readonly #records: BindingRecords;
  readonly #queue = new VolumeQueue();
  /** Bindings made by this run. */
  readonly #live = new Map<string, Binding>();
  readonly #defaultConnections: number;
  readonly #log: Logger;
  #closed = false;

  /** `drivers` holds one driver per kind; `kind` picks the one that binds. */
  constructor(kind: Binding["kind"], drivers: Record<Binding["kind"], DeviceDriver>, opts: BinderOptions) {
    this.kind = kind;
    this.#driver = drivers[kind];
    this.#drivers = drivers;
    this.#records = new BindingRecords(opts.stateDir);
    this.#defaultConnections = opts.defaultConnections;
    this.#log = opts.log;
  }

  async bind(req: BindRequest): Promise<Binding> {
    this.#checkOpen();
    const checked = checkBindRequest(req, this.#defaultConnections);
    return this.#queue.run(checked.volume, () => this.#bind(checked));
  }

  async unbind(volume: string): Promise<void> {
    this.#checkOpen();
    // Nothing can be recorded under a name a request would refuse.
    if (!isVolumeName(volume)) return;
    await this.#queue.run(volume, async () => {
      const binding = this.#live.get(volume) ?? (await this.#records.read(volume));
      if (binding) await this.#drivers[binding.kind].detach(binding);
      await this.#records.remove(volume);
      this.#live.delete(volume);
    });
  }

  async recorded(): Promise<Binding[]> {
    this.#checkOpen();
    const found: Binding[] = [];
    for (const record of await this.#records.list()) {
      await this.#queue.run(record.volume, async () => {
        const driver = this.#drivers[record.kind];
        if (await driver.present(record)) {
          found.push(record);
          return;
        }
        // Its device is gone; clear whatever else is left (a mount, a process).
        this.#log.info({ volume: record.volume, device: record.device }, "dropping a binding whose device is gone");
        await driver.detach(record).catch((err: unknown) =>
          this.#log.warn({ err, volume: record.volume }, "could not clear what is left of a binding"),
        );
        await this.#records.remove(record.volume);
      });
    }
    return found;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue.idle();
  }

  async #bind(req: CheckedRequest): Promise<Binding> {
    await checkSocket(req.socketPath);
    const live = this.#live.get(req.volume);
    if (live && sameTarget(live, req) && (await this.#driver.present(live))) return live;
    const old = live ?? (await this.#records.read(req.volume));
    if (!live && old?.kind === this.kind && sameTarget(old, req) && this.#driver.adopt) {
      const adopted = await this.#driver.adopt(req, old);
      if (adopted) {
        await this.#records.write(adopted);
        this.#live.set(req.volume, adopted);
        this.#log.info({ volume: req.volume, device: adopted.device }, "re-adopted a binding of an earlier run");
        return adopted;
      }
    }
    if (old) {
      this.#log.info({ volume: req.volume, device: old.device, kind: old.kind }, "replacing an earlier binding");
      await this.#drivers[old.kind].detach(old);
      await this.#records.remove(req.volume);
      this.#live.delete(req.volume);
    }
    const previous = old?.kind === this.kind ? old : null;
    let binding: Binding | undefined;
    try {
      binding = await this.#driver.attach(req, previous, (partial) => this.#records.write(partial));
      await this.#records.write(binding);
    } catch (err) {
      // The driver cleaned up after itself; a record of an intermediate state must go too.
      if (binding) await this.#driver.detach(binding).catch(() => {});
      await this.#records.remove(req.volume).catch(() => {});
      throw err;
    }
    this.#live.set(req.volume, binding);
    return binding;
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("binder is closed");
  }
}

/** The export must be served before anything is spawned for it. */
async function checkSocket(path: string): Promise<void> {
  const info = await lstat(path).catch(() => null);
  if (!info?.isSocket()) {
    throw new BindError("EXPORT_UNREACHABLE", `no NBD server socket at ${path}${info ? " (not a socket)" : ""}`);
  }
}

function sameTarget(binding: Binding, req: CheckedRequest): boolean {
  return (
    binding.socketPath === req.socketPath &&
    binding.exportName === req.exportName &&
    binding.identifier === req.identifier &&
    binding.sizeBytes === req.sizeBytes &&
    binding.blockSize === req.blockSize &&
    binding.readOnly === req.readOnly
  );
}
