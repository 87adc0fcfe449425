/**
 * A mounted ext4 under fsync load across agent restarts, on the fuse-loop
 * binding (this machine has no nbd module): the real agent (`dist/pagedisk.mjs
 * agent run --kernel fuse`) with the control plane and Azurite, a volume
 * attached to it and bound to /dev/loopN, ext4 made and mounted there, and
 * an application creating and fsyncing files (fsync-writer.ts) the whole
 * time. The agent is stopped and started again RESTARTS times: by SIGKILL
 * in KILLS of the first rounds (every other one), else by SIGTERM. Then:
 *
 * - the writer never saw an error, and went on writing after every restart;
 * - the volume stayed on the same /dev/loopN, re-adopted by every new agent;
 * - after unmounting, `e2fsck -fn` finds the filesystem clean, and every
 *   file the writer had fsynced reads back with its bytes.
 *
 * RESTARTS is PAGEDISK_FUSE_RESTARTS (default 20), KILLS is
 * PAGEDISK_FUSE_KILLS (default 2; at most half the rounds, rounded up). A
 * killed agent may have left a Put Page in flight, so the next one's page
 * writes wait up to 22.2 s (pageblob/in-doubt.ts): each kill costs that, so
 * `npm test` kills twice and a soak may kill ten times. Every wait is on
 * what the writer or the agent says, never on a timer.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../../agent/control/api-client.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { type AgentProcess, startAgent } from "../control/agent-process.ts";
import { type Azurite, freePort, startAzurite } from "../harness/azurite.ts";
import { toolPath } from "../harness/tools.ts";
import { ensureBundleBuilt } from "../infra/installer.ts";

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const NODE = "vm-restarts";
const VOLUME = "vol-restarts";
const RESTARTS = Number(process.env.PAGEDISK_FUSE_RESTARTS ?? 20);
const KILLS = Math.min(Number(process.env.PAGEDISK_FUSE_KILLS ?? 2), Math.ceil(RESTARTS / 2));
/** Files the writer must fsync between two restarts: it is making progress, through the relay. */
const FILES_BETWEEN = 5;

let azurite: Azurite | undefined;
let cp: LocalControlPlane | undefined;
let api: ApiClient;
let dir = "";
let stateDir = "";
let fsDir = "";
let joinToken = "";
let agent: AgentProcess | undefined;
let mounted = false;

/** The writer's output, line by line, with a wait for a count of fsynced files. */
class Writer {
  readonly proc: ChildProcess;
  readonly files = new Map<string, string>();
  readonly errors: string[] = [];
  readonly exited: Promise<number | null>;
  #waiters = new Set<() => void>();

  constructor(target: string) {
    this.proc = spawn(process.execPath, [join(import.meta.dirname, "fsync-writer.ts"), target, "7"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    this.exited = once(this.proc, "exit").then(([code]) => code as number | null);
    createInterface({ input: this.proc.stdout! }).on("line", (line) => {
      const [kind, name, sum] = line.split(" ");
      if (kind === "ok" && name && sum) this.files.set(name, sum);
      else this.errors.push(line);
      for (const w of this.#waiters) w();
    });
    void this.exited.then(() => {
      for (const w of this.#waiters) w();
    });
  }

  /** Resolves once `count` files are fsynced; rejects if the writer stops first. */
  until(count: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.files.size >= count) {
          this.#waiters.delete(check);
          resolve();
        } else if (this.errors.length > 0 || this.proc.exitCode !== null) {
          this.#waiters.delete(check);
          reject(new Error(`the writer stopped after ${this.files.size} files: ${this.errors.join("; ")}`));
        }
      };
      this.#waiters.add(check);
      check();
    });
  }
}

function agentArgs(): string[] {
  return ["--control-plane", new URL(cp!.apiUrl).origin, "--state-dir", stateDir, "--name", NODE, "--kernel", "fuse"];
}

/** The device the agent says it serves the volume on, from its "volume serving" line. */
async function serving(a: AgentProcess, from = 0): Promise<string> {
  const line = await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME, from);
  return line.device as string;
}

/** Relay and nbdfuse processes of bindings under this test's state dir. */
async function helpers(): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (argv.includes(stateDir) && (argv.includes("fuse-relay") || argv.includes("nbdfuse"))) found.push(Number(entry));
  }
  return found;
}

beforeAll(async () => {
  await ensureBundleBuilt();
  dir = await mkdtemp(join(tmpdir(), "pagedisk-restarts-"));
  stateDir = join(dir, "state");
  fsDir = join(dir, "fs");
  await mkdir(fsDir);
  azurite = await startAzurite({ table: true });
  cp = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: { PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "1" },
    port: await freePort(),
    stateDir: join(dir, "cp"),
    log: () => {},
  });
  api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
  await api.createPool({
    name: "pr",
    container: "pr-disks",
    auth: { kind: "connectionString", connectionString: azurite.connectionString },
  });
  joinToken = (await api.createToken()).token;
});

afterAll(async () => {
  if (mounted) await exec("umount", [fsDir]).catch(() => {});
  if (agent && cp) {
    // Detached through the control plane, the agent tears the binding down.
    await api.detachVolume(VOLUME, true).catch(() => {});
    await agent.waitForLog((r) => r.msg === "volume detached" && r.volume === VOLUME).catch(() => {});
  }
  await agent?.stop("SIGTERM");
  await cp?.close();
  await azurite?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("ext4 on a fuse-loop device across agent restarts", () => {
  it(`loses nothing and sees no error through ${RESTARTS} restarts (${KILLS} by SIGKILL, the rest by SIGTERM)`, async () => {
    agent = await startAgent(agentArgs(), { PAGEDISK_JOIN_TOKEN: joinToken });
    await api.createVolume({ name: VOLUME, sizeBytes: 128 * MiB, replicas: 1 });
    await api.attachVolume(VOLUME, NODE);
    const device = await serving(agent);
    expect(device).toMatch(/^\/dev\/loop\d+$/);

    await exec(toolPath("mkfs.ext4"), ["-q", "-F", device]);
    await exec("mount", [device, fsDir]);
    mounted = true;
    await mkdir(join(fsDir, "d"));
    const writer = new Writer(join(fsDir, "d"));
    try {
      await writer.until(FILES_BETWEEN);
      const signals: string[] = [];
      const devices: string[] = [];
      let adopted = 0;
      for (let round = 0; round < RESTARTS; round++) {
        const signal = round % 2 === 0 && round / 2 < KILLS ? "SIGKILL" : "SIGTERM";
        signals.push(signal);
        // Killed or stopped while the writer is in the middle of its work.
        const stopped = await agent.stop(signal);
        expect(stopped, `round ${round}`).toBe(signal === "SIGKILL" ? "SIGKILL" : 0);
        agent = await startAgent(agentArgs());
        devices.push(await serving(agent));
        // The binder logs it before the volume is said to be serving.
        if (agent.logs.some((r) => r.msg === "re-adopted a binding of an earlier run" && r.volume === VOLUME)) adopted++;
        await writer.until(writer.files.size + FILES_BETWEEN);
      }
      expect(signals.filter((s) => s === "SIGKILL").length).toBe(KILLS);
      expect(devices).toEqual(Array(RESTARTS).fill(device));
      expect(adopted).toBe(RESTARTS);
    } finally {
      writer.proc.kill("SIGTERM");
    }
    expect(await writer.exited).toBe(0);
    expect(writer.errors).toEqual([]);

    await exec("umount", [fsDir]);
    mounted = false;
    // e2fsck -n: a read-only check; exit status 0 (no throw) means clean.
    const fsck = await exec(toolPath("e2fsck"), ["-fn", device]);
    expect(fsck.stdout).toMatch(/\d+\/\d+ files/);
    await exec("mount", ["-o", "ro", device, fsDir]);
    mounted = true;
    for (const [name, sum] of writer.files) {
      const back = await readFile(join(fsDir, "d", name));
      expect(createHash("sha256").update(back).digest("hex"), name).toBe(sum);
    }
    await exec("umount", [fsDir]);
    mounted = false;
    // The relay (not nbdfuse, not the device) went back to every new agent, with what it held.
    const relayLog = (await readFile(join(stateDir, "fuse", `${VOLUME}.relay.log`), "utf8"))
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { msg?: string; requests?: number });
    expect(relayLog.filter((r) => r.msg === "connected to the agent again")).toHaveLength(RESTARTS);
    const resent = relayLog.filter((r) => r.msg === "sending the held requests to the agent").reduce((n, r) => n + (r.requests ?? 0), 0);
    console.log(
      `ext4 across ${RESTARTS} agent restarts: ${writer.files.size} files fsynced, 0 lost, 0 errors, ` +
        `${resent} requests held and sent again, fsck clean, ${device} throughout`,
    );

    // Detached: loop device, mount, nbdfuse and relay all go.
    const from = agent.logs.length;
    await api.detachVolume(VOLUME);
    await agent.waitForLog((r) => r.msg === "volume detached" && r.volume === VOLUME, from);
    const backing = await readFile(`/sys/block/${device.slice(5)}/loop/backing_file`, "utf8").catch(() => "");
    expect(backing).not.toContain(stateDir);
    expect(await helpers()).toEqual([]);
  }, 600_000);
});
