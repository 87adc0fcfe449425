/**
 * The fuse-loop binder against real processes: our NbdServer on a unix
 * socket, nbdfuse, losetup and fusermount3, I/O through the loop device with
 * node:fs. This machine has no nbd kernel module, which is the case the
 * fallback exists for.
 */
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Binding, BindRequest, KernelBinder } from "../../agent/host/binding.ts";
import { BindError } from "../../agent/host/errors.ts";
import { openBinder } from "../../agent/host/open-binder.ts";
import { processStartTime } from "../../agent/host/process.ts";
import { createLogger } from "../../agent/log.ts";
import {
  census,
  MemoryBackend,
  NOTHING,
  readDevice,
  serveExport,
  type ServedExport,
  writeDevice,
} from "./host-fixture.ts";

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const log = createLogger({ level: "silent" });

let root = "";
let stateDir = "";
let socket = "";
let backend: MemoryBackend;
let served: ServedExport | undefined;
const binders: KernelBinder[] = [];

function request(overrides: Partial<BindRequest> = {}): BindRequest {
  return {
    volume: "vol1",
    socketPath: socket,
    exportName: "vol1",
    sizeBytes: SIZE,
    identifier: "pagedisk:node1:vol1:1",
    connections: 2,
    ...overrides,
  };
}

async function binder(): Promise<KernelBinder> {
  const b = await openBinder({ stateDir, mode: "fuse", log });
  binders.push(b);
  return b;
}

async function rejection(promise: Promise<unknown>): Promise<BindError> {
  const err = await promise.then(
    () => new Error("expected the bind to fail"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BindError);
  return err as BindError;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "pagedisk-host-"));
  stateDir = join(root, "state");
  socket = join(root, "nbd.sock");
  backend = new MemoryBackend({ size: SIZE });
  served = await serveExport(socket, "vol1", backend);
});

afterAll(async () => {
  // A fresh binder tears down from the record whatever a failed test left.
  if (stateDir && existsSync(stateDir)) await (await binder()).unbind("vol1").catch(() => {});
  for (const b of binders) await b.close();
  await served?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

beforeEach(async () => {
  expect(await census(root)).toEqual(NOTHING);
});

afterEach(async () => {
  // Nothing a test bound may outlive it: no loop device, mount or nbdfuse.
  expect(await census(root)).toEqual(NOTHING);
});

describe("fuse-loop binder", () => {
  it("binds an export, carries I/O both ways, and unbinds without a trace", async () => {
    const b = await binder();
    expect(b.kind).toBe("fuse-loop");
    const binding = (await b.bind(request())) as Binding;
    expect(binding).toMatchObject({ volume: "vol1", kind: "fuse-loop", identifier: "pagedisk:node1:vol1:1" });
    expect(binding.device).toMatch(/^\/dev\/loop\d+$/);
    expect(binding.fuse?.file).toBe(join(stateDir, "fuse", "vol1", "disk"));

    // Recorded before it was returned, readable by root only.
    const recordPath = join(stateDir, "bindings", "vol1.json");
    expect((await stat(recordPath)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(recordPath, "utf8"))).toEqual(binding);

    const sys = `/sys/block/${binding.device.slice(5)}`;
    expect((await readFile(`${sys}/loop/backing_file`, "utf8")).trim()).toBe(binding.fuse?.file);
    expect((await readFile(`${sys}/loop/dio`, "utf8")).trim()).toBe("1");
    expect((await readFile(`${sys}/queue/logical_block_size`, "utf8")).trim()).toBe("4096");
    expect(Number(await readFile(`${sys}/size`, "utf8")) * 512).toBe(SIZE);

    // Device -> server.
    const written = randomBytes(MiB);
    await writeDevice(binding.device, 3 * MiB, written);
    expect(Buffer.from(await backend.read(3 * MiB, MiB)).equals(written)).toBe(true);
    // Server -> device.
    const stored = randomBytes(64 * 1024);
    await backend.write(9 * MiB, stored);
    expect((await readDevice(binding.device, 9 * MiB, stored.length)).equals(stored)).toBe(true);

    // The same request again in the same run is the same binding.
    expect(await b.bind(request())).toEqual(binding);
    expect(await b.recorded()).toEqual([binding]);

    await b.unbind("vol1");
    expect(await census(root)).toEqual(NOTHING);
    expect(await readFile(`${sys}/loop/backing_file`, "utf8").catch(() => "")).not.toContain(root);
    expect(await processStartTime(binding.fuse!.pid)).toBeNull();
    expect(existsSync(recordPath)).toBe(false);
    expect(existsSync(binding.fuse!.mountDir)).toBe(false);
    expect(await b.recorded()).toEqual([]);

    // A second unbind, and one of a volume never bound, change nothing.
    await b.unbind("vol1");
    await b.unbind("never-bound");
    expect(await b.recorded()).toEqual([]);
  });

  it("replaces the binding an earlier run left for another attachment, and I/O works through the new device", async () => {
    const first = (await (await binder()).bind(request())) as Binding;
    const before = randomBytes(256 * 1024);
    await writeDevice(first.device, 2 * MiB, before);

    // Agent restart: its NBD server dies with it; the new run serves the
    // same volume on the same socket path and opens a binder on the same
    // state dir. The first binder is simply abandoned, as SIGKILL would.
    await served!.close();
    served = await serveExport(socket, "vol1", backend);
    const restarted = await binder();

    // The old binding is still there to be found...
    expect(await restarted.recorded()).toEqual([first]);
    // ...but nbdfuse lost its connection, so it is torn down and bound anew.
    const second = (await restarted.bind(request({ identifier: "pagedisk:node1:vol1:2" }))) as Binding;
    expect(second.identifier).toBe("pagedisk:node1:vol1:2");
    expect(second.fuse!.pid).not.toBe(first.fuse!.pid);
    expect(await processStartTime(first.fuse!.pid)).toBeNull();
    const c = await census(root);
    expect(c.loops).toEqual([second.device]);
    expect(c.nbdfuse).toEqual([second.fuse!.pid]);
    expect(c.mounts).toEqual([second.fuse!.mountDir]);
    expect(c.relays).toEqual([second.fuse!.relay!.pid]);

    // What was written before the restart reads back through the new device,
    // and new writes reach the new server.
    expect((await readDevice(second.device, 2 * MiB, before.length)).equals(before)).toBe(true);
    const after = randomBytes(MiB);
    await writeDevice(second.device, 5 * MiB, after);
    expect(Buffer.from(await backend.read(5 * MiB, MiB)).equals(after)).toBe(true);

    expect(await restarted.recorded()).toEqual([second]);
    await restarted.unbind("vol1");
    expect(await restarted.recorded()).toEqual([]);
  });

  it("keeps the binding when the agent's whole process group is killed with SIGKILL, and the next run adopts it", async () => {
    const agent = spawn(
      process.execPath,
      [join(import.meta.dirname, "bind-and-hold.ts"), stateDir, JSON.stringify(request())],
      { stdio: ["ignore", "pipe", "inherit"], detached: true },
    );
    const exited = once(agent, "exit");
    const [line] = (await Promise.race([
      once(createInterface({ input: agent.stdout! }), "line"),
      exited.then(() => {
        throw new Error("the agent exited before binding");
      }),
    ])) as [string];
    const left = JSON.parse(line) as Binding;
    process.kill(-agent.pid!, "SIGKILL");
    await exited;

    // nbdfuse and the relay run in sessions of their own: the device is still there and serving.
    const relay = left.fuse!.relay!;
    expect(await census(root)).toEqual({
      loops: [left.device],
      mounts: [left.fuse!.mountDir],
      nbdfuse: [left.fuse!.pid],
      relays: [relay.pid],
    });
    const data = randomBytes(128 * 1024);
    await writeDevice(left.device, 7 * MiB, data);
    expect(Buffer.from(await backend.read(7 * MiB, data.length)).equals(data)).toBe(true);

    // The same attachment asked for again: the whole binding is kept, device path included.
    const restarted = await binder();
    expect(await restarted.recorded()).toEqual([left]);
    const again = (await restarted.bind(request())) as Binding;
    expect(again).toEqual(left);
    expect(await census(root)).toEqual({
      loops: [left.device],
      mounts: [left.fuse!.mountDir],
      nbdfuse: [left.fuse!.pid],
      relays: [relay.pid],
    });
    expect((await readDevice(again.device, 7 * MiB, data.length)).equals(data)).toBe(true);
    // Unbinding takes every part down, the relay last.
    await restarted.unbind("vol1");
    expect(await processStartTime(relay.pid)).toBeNull();
  });

  it("drops a record whose device is gone, clearing what is left of it", async () => {
    const first = (await (await binder()).bind(request())) as Binding;
    // Someone detached the loop device behind the agent's back.
    execFileSync("losetup", ["-d", first.device]);
    const restarted = await binder();
    expect(await restarted.recorded()).toEqual([]);
    expect(existsSync(join(stateDir, "bindings", "vol1.json"))).toBe(false);
  });

  it("refuses a socket nobody serves, leaving nothing behind", async () => {
    const b = await binder();
    const missing = join(root, "missing.sock");
    const err = await rejection(b.bind(request({ socketPath: missing })));
    expect(err.code).toBe("EXPORT_UNREACHABLE");
    expect(err.message).toContain(missing);
    expect(await b.recorded()).toEqual([]);
    expect(existsSync(join(stateDir, "fuse", "vol1"))).toBe(false);
  });

  it("refuses an export the server does not have, leaving nothing behind", async () => {
    const b = await binder();
    const err = await rejection(b.bind(request({ exportName: "no-such-export" })));
    expect(err.code).toBe("EXPORT_UNREACHABLE");
    expect(err.message).toContain("no-such-export");
    expect(await b.recorded()).toEqual([]);
    expect(existsSync(join(stateDir, "fuse", "vol1"))).toBe(false);
    expect(await readdir(join(stateDir, "fuse"))).toEqual([]);
  });

  it("refuses an export whose size is not the volume's, leaving nothing behind", async () => {
    const b = await binder();
    const err = await rejection(b.bind(request({ sizeBytes: SIZE * 2 })));
    expect(err.code).toBe("SIZE_MISMATCH");
    // Mounted and recorded as pending before the size was known: both undone.
    expect(existsSync(join(stateDir, "bindings", "vol1.json"))).toBe(false);
    expect(await b.recorded()).toEqual([]);
    expect(await readdir(join(stateDir, "fuse"))).toEqual([]);
  });

  it("refuses bad requests before touching anything", async () => {
    const b = await binder();
    const bad: Partial<BindRequest>[] = [
      { volume: "../etc" },
      { volume: "" },
      { socketPath: "relative.sock" },
      { sizeBytes: 1000 },
      { sizeBytes: -4096 },
      { blockSize: 3000 },
      { connections: 0 },
      { identifier: "" },
      { timeoutSeconds: 0 },
    ];
    for (const fields of bad) {
      const err = await rejection(b.bind(request({ volume: "bad1", ...fields })));
      expect(err.code, JSON.stringify(fields)).toBe("INVALID_REQUEST");
    }
    expect(existsSync(join(stateDir, "bindings", "bad1.json"))).toBe(false);
    expect(existsSync(join(stateDir, "fuse", "bad1"))).toBe(false);
    // Unbinding a name no request could carry is a no-op, not a path outside the state dir.
    await b.unbind("../bindings/vol1");
  });
});
