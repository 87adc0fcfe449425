/**
 * The `nbd` kind: the kernel's nbd driver, configured by nbd-client over
 * netlink with one connection per CPU (our server advertises CAN_MULTI_CONN).
 *
 * Re-adoption keeps the device path: the volume's old /dev/nbdN is
 * disconnected and connected again to the new server socket. nbd-client
 * cannot hand new sockets to a live device (NBD_CMD_RECONFIGURE), so
 * requests in flight across an agent restart fail rather than wait; with an
 * nbd-client that knows `-dead-timeout` they wait until the new agent binds.
 */
import { readFile } from "node:fs/promises";
import type { Logger } from "../log.ts";
import { type Binding, type CheckedRequest, bindingOf } from "./binding.ts";
import type { DeviceDriver } from "./device-driver.ts";
import { BindError } from "./errors.ts";
import {
  isUnreachable,
  nbdClientFeatures,
  nbdConnectArgs,
  nbdDisconnectArgs,
  nbdIndex,
  type NbdClientFeatures,
  parseConnected,
} from "./nbd-client-args.ts";
import { requireTool, runTool, said } from "./tools.ts";

/** What sysfs tells of /dev/nbdN. */
interface NbdState {
  /** /sys/block/nbdN/pid exists only while the device is configured. */
  connected: boolean;
  /** The backend identifier, when nbd-client set one. */
  backend: string | null;
}

export class NbdDriver implements DeviceDriver {
  readonly kind = "nbd" as const;
  readonly #log: Logger;
  #tool: { path: string; features: NbdClientFeatures } | undefined;

  constructor(log: Logger) {
    this.#log = log;
  }

  async attach(req: CheckedRequest, previous: Binding | null): Promise<Binding> {
    const { path, features } = await this.#nbdClient();
    let device: string | undefined;
    if (previous && nbdIndex(previous.device) !== null) {
      const state = await nbdState(previous.device);
      // Configured again since we detached it: somebody else's now.
      if (!state.connected) device = previous.device;
    }
    const out = await runTool(path, nbdConnectArgs(req, features, device));
    if (out.code !== 0) {
      const code = isUnreachable(said(out)) ? "EXPORT_UNREACHABLE" : "TOOL_FAILED";
      throw new BindError(code, `nbd-client could not bind ${req.socketPath} (export ${JSON.stringify(req.exportName)}): ${said(out)}`);
    }
    const bound = parseConnected(out.stdout) ?? device;
    if (!bound) throw new BindError("TOOL_FAILED", `nbd-client did not say which device it connected: ${said(out)}`);
    const binding = bindingOf(req, "nbd", bound);
    const size = await deviceBytes(bound);
    if (size !== req.sizeBytes) {
      await this.detach(binding);
      throw new BindError("SIZE_MISMATCH", `${bound} has ${size} bytes, the volume ${req.sizeBytes}`);
    }
    this.#log.info({ volume: req.volume, device: bound, connections: req.connections }, "nbd device bound");
    return binding;
  }

  async detach(binding: Binding): Promise<void> {
    if (!(await this.present(binding))) return;
    const { path } = await this.#nbdClient();
    const out = await runTool(path, nbdDisconnectArgs(binding.device));
    // Disconnected in between is as good as disconnected now.
    if (out.code !== 0 && (await nbdState(binding.device)).connected) {
      throw new BindError("TOOL_FAILED", `nbd-client -d ${binding.device} failed: ${said(out)}`);
    }
    this.#log.info({ volume: binding.volume, device: binding.device }, "nbd device unbound");
  }

  async present(binding: Binding): Promise<boolean> {
    if (nbdIndex(binding.device) === null) return false;
    const state = await nbdState(binding.device);
    return state.connected && (state.backend === null || state.backend === binding.identifier);
  }

  async #nbdClient(): Promise<{ path: string; features: NbdClientFeatures }> {
    if (!this.#tool) {
      const path = requireTool("nbd-client", "nbd-client");
      const features = nbdClientFeatures(await readFile(path));
      this.#log.info({ nbdClient: path, ...features }, "nbd-client features");
      this.#tool = { path, features };
    }
    return this.#tool;
  }
}

async function nbdState(device: string): Promise<NbdState> {
  const sys = `/sys/block/${device.slice("/dev/".length)}`;
  const connected = await readFile(`${sys}/pid`, "utf8").then(
    () => true,
    () => false,
  );
  const backend = await readFile(`${sys}/backend`, "utf8").then(
    (text) => text.trim() || null,
    () => null,
  );
  return { connected, backend };
}

/** Size of a block device from sysfs (always in 512-byte sectors). */
export async function deviceBytes(device: string): Promise<number> {
  const sectors = await readFile(`/sys/block/${device.slice("/dev/".length)}/size`, "utf8");
  return Number(sectors.trim()) * 512;
}
