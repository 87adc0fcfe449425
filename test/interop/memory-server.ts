/**
 * An NbdServer serving memory volumes in this process, on a unix socket in
 * a fresh temp dir, for driving real clients against. Each export is the
 * product's whole engine stack (`openVolume`) over a MemoryBackend, exactly
 * what `pagedisk serve memory:SIZE` serves; `devices` gives the backends so
 * tests can look beneath the stack.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { openVolume, type Volume } from "../../agent/engine/volume.ts";
import type { ExportOptions } from "../../agent/nbd/catalog.ts";
import { NbdServer } from "../../agent/nbd/server.ts";

export interface MemoryServer {
  server: NbdServer;
  /** The backends under the volumes, by export name. */
  devices: Map<string, MemoryBackend>;
  /** The served volumes (engine stacks), by export name. */
  volumes: Map<string, Volume>;
  socket: string;
  dir: string;
  /** `nbd+unix:///NAME?socket=...` for an export (the default export when omitted). */
  uri(exportName?: string): string;
  close(): Promise<void>;
}

export interface MemoryExport extends ExportOptions {
  size: number;
}

/** Serve one MemoryBackend per export; `{ "": ... }` is reached with the empty name. */
export async function serveMemory(exports: Record<string, MemoryExport>): Promise<MemoryServer> {
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-nbd-"));
  const socket = join(dir, "nbd.sock");
  const devices = new Map<string, MemoryBackend>();
  const volumes = new Map<string, Volume>();
  const server = new NbdServer();
  for (const [name, { size, ...opts }] of Object.entries(exports)) {
    const device = new MemoryBackend({ size });
    const volume = await openVolume(device);
    devices.set(name, device);
    volumes.set(name, volume);
    server.addExport(name, volume, opts);
  }
  await server.listen({ unix: socket });
  return {
    server,
    devices,
    volumes,
    socket,
    dir,
    uri: (name = "") => `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`,
    async close() {
      await server.close();
      for (const volume of volumes.values()) await volume.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
