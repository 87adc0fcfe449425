/**
 * Bindings on disk: one JSON file per volume in `<stateDir>/bindings/`,
 * mode 0600, written before a bind returns, so that an agent killed with
 * SIGKILL leaves enough behind for the next run to find and re-adopt (or
 * tear down) what it bound. Written whole or not at all (state-file.ts):
 * a crash mid-write leaves the old record or the new one, never half.
 */
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Binding } from "./binding.ts";
import { writeStateFile } from "./state-file.ts";

export class BindingRecords {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "bindings");
  }

  /** Record (or replace) the binding of `binding.volume`. */
  async write(binding: Binding): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeStateFile(this.#path(binding.volume), `${JSON.stringify(binding, null, 2)}\n`);
  }

  /** The record of one volume, or null. A record that does not parse is treated as absent. */
  async read(volume: string): Promise<Binding | null> {
    let text: string;
    try {
      text = await readFile(this.#path(volume), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    return parseRecord(text, volume);
  }

  /** Every record, in volume order. */
  async list(): Promise<Binding[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const out: Binding[] = [];
    for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
      const record = await this.read(name.slice(0, -".json".length));
      if (record) out.push(record);
    }
    return out;
  }

  async remove(volume: string): Promise<void> {
    await rm(this.#path(volume), { force: true });
  }

  #path(volume: string): string {
    return join(this.dir, `${volume}.json`);
  }
}

function parseRecord(text: string, volume: string): Binding | null {
  try {
    const value = JSON.parse(text) as Partial<Binding>;
    const ok =
      value.volume === volume &&
      (value.kind === "nbd" || value.kind === "fuse-loop") &&
      typeof value.device === "string" &&
      typeof value.identifier === "string";
    return ok ? (value as Binding) : null;
  } catch {
    return null;
  }
}
