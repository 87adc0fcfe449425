/**
 * What the binder tests need around a binder: our NbdServer serving one
 * MemoryBackend on a unix socket (restartable on the same path, as an agent
 * restart does), I/O through a block device as an application does it, and a census of what a binding leaves on the host (loop
 * devices, mounts, nbdfuse and fuse relay processes) under a test's own directory, so that
 * other suites binding loop devices at the same time do not disturb it.
 */
import { open, readdir, readFile } from "node:fs/promises";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { NbdServer } from "../../agent/nbd/server.ts";

export interface ServedExport {
  server: NbdServer;
  close(): Promise<void>;
}

/** Serve `device` as `name` on `socket`; the device outlives the server. */
export async function serveExport(socket: string, name: string, device: MemoryBackend): Promise<ServedExport> {
  const server = new NbdServer({ exports: { [name]: device } });
  await server.listen({ unix: socket });
  return { server, close: () => server.close({ graceMs: 5_000 }) };
}

/** What exists on the host under `root`. */
export interface Census {
  loops: string[];
  mounts: string[];
  nbdfuse: number[];
  relays: number[];
}

export async function census(root: string): Promise<Census> {
  const loops: string[] = [];
  for (const name of await readdir("/sys/block")) {
    if (!name.startsWith("loop")) continue;
    const backing = await readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "");
    if (backing.startsWith(root)) loops.push(`/dev/${name}`);
  }
  const mounts = (await readFile("/proc/self/mountinfo", "utf8"))
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((point) => point.startsWith(root));
  const nbdfuse: number[] = [];
  const relays: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    // A zombie has an empty command line: it is gone in every sense that matters.
    const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (argv[0]?.endsWith("nbdfuse") && argv.some((a) => a.startsWith(root))) nbdfuse.push(Number(entry));
    if (argv.includes("fuse-relay") && argv.some((a) => a.includes(`"${root}/`))) relays.push(Number(entry));
  }
  return { loops: loops.sort(), mounts: mounts.sort(), nbdfuse: nbdfuse.sort(), relays: relays.sort() };
}

/** Write through a block device the way an application would: write, fsync, close. */
export async function writeDevice(device: string, offset: number, data: Buffer): Promise<void> {
  const file = await open(device, "r+");
  try {
    await file.write(data, 0, data.length, offset);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** `length` bytes of a block device at `offset`; a short read is an error. */
export async function readDevice(device: string, offset: number, length: number): Promise<Buffer> {
  const file = await open(device, "r");
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await file.read(buf, 0, length, offset);
    if (bytesRead !== length) throw new Error(`${device}: read ${bytesRead} of ${length} bytes at ${offset}`);
    return buf;
  } finally {
    await file.close();
  }
}

export const NOTHING: Census = { loops: [], mounts: [], nbdfuse: [], relays: [] };

export { MemoryBackend };
