/**
 * The fuse relay's hold, with our NbdServer in this process standing in for
 * the agent's export: a write made while no agent serves waits and lands
 * once the next run re-adopts the binding; with no agent for longer than
 * the hold, it fails with EIO instead of hanging.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import type { Binding, BindRequest, KernelBinder } from "../../agent/host/binding.ts";
import { openBinder } from "../../agent/host/open-binder.ts";
import { createLogger } from "../../agent/log.ts";
import { census, MemoryBackend, NOTHING, serveExport, type ServedExport, writeDevice } from "./host-fixture.ts";

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const log = createLogger({ level: "silent" });

let root = "";
let stateDir = "";
let socket = "";
let backend: MemoryBackend;
let served: ServedExport | undefined;

function request(): BindRequest {
  return { volume: "vol1", socketPath: socket, exportName: "vol1", sizeBytes: SIZE, identifier: "pagedisk:n:vol1:1", connections: 1 };
}

function binder(holdSeconds?: number): Promise<KernelBinder> {
  return openBinder({ stateDir, mode: "fuse", log, ...(holdSeconds ? { fuse: { holdSeconds } } : {}) });
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "pagedisk-relay-"));
  stateDir = join(root, "state");
  socket = join(root, "nbd.sock");
  backend = new MemoryBackend({ size: SIZE });
  served = await serveExport(socket, "vol1", backend);
});

afterEach(async () => {
  if (!served) served = await serveExport(socket, "vol1", backend);
  await (await binder()).unbind("vol1");
  expect(await census(root)).toEqual(NOTHING);
  await served.close();
  await rm(root, { recursive: true, force: true });
});

it("holds a write made while no agent serves, and lands it once the next run adopts the binding", async () => {
  const bound = (await (await binder()).bind(request())) as Binding;
  // The agent goes away (a stop drains and closes its server) with the binding left in place.
  await served!.close();
  served = undefined;
  const data = randomBytes(256 * 1024);
  const writing = writeDevice(bound.device, 3 * MiB, data);
  served = await serveExport(socket, "vol1", backend);
  const adopted = await (await binder()).bind(request());
  expect(adopted).toEqual(bound);
  await writing;
  expect(Buffer.from(await backend.read(3 * MiB, data.length)).equals(data)).toBe(true);
});

it("fails held requests with EIO once no agent has come back within the hold", async () => {
  const bound = (await (await binder(1)).bind(request())) as Binding;
  await served!.close();
  served = undefined;
  const err = await writeDevice(bound.device, 3 * MiB, randomBytes(64 * 1024)).then(
    () => null,
    (e: unknown) => e as NodeJS.ErrnoException,
  );
  expect(err?.code).toBe("EIO");
  // Failed by the relay's bound, not by a connection that died with the agent.
  const said = await readFile(join(stateDir, "fuse", "vol1.relay.log"), "utf8");
  expect(said).toContain("no agent took the held requests in time");
});
