/**
 * An NbdServer serving MemoryBackends in this process, on a unix socket in
 * a fresh temp dir, for driving real clients against.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import type { ExportOptions } from "../../agent/nbd/catalog.ts";
import { NbdServer } from "../../agent/nbd/server.ts";

export interface MemoryServer {
  server: NbdServer;
  /** The devices by export name. */
  devices: Map<string, MemoryBackend>;
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
  const server = new NbdServer();
  for (const [name, { size, ...opts }] of Object.entries(exports)) {
    const device = new MemoryBackend({ size });
    devices.set(name, device);
    server.addExport(name, device, opts);
  }
  await server.listen({ unix: socket });
  return {
    server,
    devices,
    socket,
    dir,
    uri: (name = "") => `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`,
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
