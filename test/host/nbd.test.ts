/**
 * The nbd binder through the kernel's nbd driver: nbd-client over netlink,
 * I/O on /dev/nbdN, re-adoption on the same device, unbind.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Binding } from "../../agent/host/binding.ts";
import { openBinder } from "../../agent/host/open-binder.ts";
import { createLogger } from "../../agent/log.ts";
import { MemoryBackend, readDevice, serveExport, type ServedExport, writeDevice } from "./host-fixture.ts";

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

// The CI machine has no nbd kernel module (and cannot load one), so this
// runs only where /sys/module/nbd exists; the argument building and output
// parsing it relies on are tested everywhere in nbd-client-args.test.ts.
const HAS_NBD = existsSync("/sys/module/nbd");

describe("nbd binder", () => {
  let root = "";
  let backend: MemoryBackend;
  let served: ServedExport | undefined;

  beforeAll(async () => {
    if (!HAS_NBD) return;
    root = await mkdtemp(join(tmpdir(), "pagedisk-nbd-host-"));
    backend = new MemoryBackend({ size: SIZE });
    served = await serveExport(join(root, "nbd.sock"), "vol1", backend);
  });

  afterAll(async () => {
    await served?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it.runIf(HAS_NBD)("binds /dev/nbdN, keeps it across a restart, and unbinds", async () => {
    const stateDir = join(root, "state");
    const log = createLogger({ level: "silent" });
    const req = {
      volume: "vol1",
      socketPath: join(root, "nbd.sock"),
      exportName: "vol1",
      sizeBytes: SIZE,
      identifier: "pagedisk:node1:vol1:1",
      connections: 2,
    };
    const first = await openBinder({ stateDir, mode: "nbd", log });
    expect(first.kind).toBe("nbd");
    const binding = (await first.bind(req)) as Binding;
    expect(binding.device).toMatch(/^\/dev\/nbd\d+$/);
    const data = randomBytes(MiB);
    await writeDevice(binding.device, MiB, data);
    expect(Buffer.from(await backend.read(MiB, MiB)).equals(data)).toBe(true);

    // Restart: new server on the same socket, new binder on the same state dir.
    await served!.close();
    served = await serveExport(req.socketPath, "vol1", backend);
    const second = await openBinder({ stateDir, mode: "nbd", log });
    expect(await second.recorded()).toEqual([binding]);
    const again = (await second.bind({ ...req, identifier: "pagedisk:node1:vol1:2" })) as Binding;
    expect(again.device).toBe(binding.device);
    expect((await readDevice(again.device, MiB, MiB)).equals(data)).toBe(true);

    await second.unbind("vol1");
    const name = again.device.slice("/dev/".length);
    expect(existsSync(`/sys/block/${name}/pid`)).toBe(false);
    expect(await readFile(join(stateDir, "bindings", "vol1.json"), "utf8").catch(() => null)).toBeNull();
    await second.unbind("vol1");
    await first.close();
    await second.close();
  });
});
