/**
 * The agent daemon end to end, with real parts only: Azurite (blob + table),
 * the control plane in process on a real port, telling agents to beat to
 * its liveness table every second, and `pagedisk agent` as a child process
 * (--kernel none: the exports are driven over their unix sockets with an
 * NBD client). Every wait is on something the agent, the API or the
 * liveness table says (log records, reports recorded, the node's row),
 * never on a timer.
 *
 * The cases run in order on one cluster: join, attach, I/O, detach, fencing,
 * an outage of the API (beats go on landing, a change rung meanwhile is
 * fetched once it is back), restart, a two-replica volume, removal.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { get as httpGet } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { Volume } from "../../contract/volume.ts";
import { ApiClient } from "../../agent/control/api-client.ts";
import { bumpDesiredGeneration } from "../../functions/arbiter/desired-generation.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { readLivenessRow } from "../../functions/registry/liveness.ts";
import { nodes } from "../../functions/registry/nodes.ts";
import { replicaContainerName } from "../../functions/storage/replica-container.ts";
import { type Azurite, freePort, startAzurite } from "../harness/azurite.ts";
import { writeDevice } from "../host/host-fixture.ts";
import { ensureBundleBuilt } from "../infra/installer.ts";
import { pagedisk } from "../manage/cli.ts";
import { ERR } from "../nbd/raw-client.ts";
import { type AgentProcess, nbdWrite, startAgent } from "./agent-process.ts";
import { AGENT_VERSION } from "../../agent/control/version.ts";
import { DEFAULT_DOUBT_MS } from "../../agent/pageblob/transport.ts";

const run = promisify(execFile);
const MiB = 1024 * 1024;
const NODE = "vm-agent-1";

let azurite: Azurite;
let cp: LocalControlPlane;
let port: number;
let api: ApiClient;
let blobs: BlobServiceClient;
let dir: string;
let stateDir: string;
let joinToken: string;
let agent: AgentProcess | undefined;

async function startCp(): Promise<LocalControlPlane> {
  return startLocalControlPlane({
    connectionString: azurite.connectionString,
    // Agents beat as often as the control plane tells them.
    env: { PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "1" },
    port,
    stateDir: join(dir, "cp"),
    log: () => {},
  });
}

beforeAll(async () => {
  await ensureBundleBuilt();
  dir = await mkdtemp(join(tmpdir(), "pagedisk-agent-"));
  stateDir = join(dir, "state");
  azurite = await startAzurite({ table: true });
  port = await freePort();
  cp = await startCp();
  api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
  blobs = BlobServiceClient.fromConnectionString(azurite.connectionString);
  for (const name of ["pa", "pb"]) {
    await api.createPool({
      name,
      container: `${name}-disks`,
      auth: { kind: "connectionString", connectionString: azurite.connectionString },
    });
  }
  joinToken = (await api.createToken()).token;
});

afterAll(async () => {
  await agent?.stop("SIGKILL");
  await cp?.close();
  await azurite?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function origin(): string {
  return new URL(cp.apiUrl).origin;
}

function agentArgs(): string[] {
  return [
    "--control-plane",
    origin(),
    "--state-dir",
    stateDir,
    "--kernel",
    "none",
  ];
}

async function createVolume(name: string, replicas = 1): Promise<Volume> {
  return api.createVolume({ name, sizeBytes: MiB, replicas });
}

function blobOf(v: Volume, replica = 0) {
  const r = v.status.replicas[replica]!;
  return blobs
    .getContainerClient(replicaContainerName(`${r.pool}-disks`, r.id))
    .getPageBlobClient(`${v.name}/${r.id}`);
}

function socketOf(volume: string): string {
  return join(stateDir, "sockets", `${volume}.sock`);
}

/** One write through the export; resolves with the NBD error (0 = ok). */
function write(volume: string, offset: number, data: Buffer): Promise<number> {
  return nbdWrite(socketOf(volume), volume, offset, data);
}

async function blobBytes(v: Volume, offset: number, length: number): Promise<Buffer> {
  return blobOf(v).downloadToBuffer(offset, length);
}

/** GET on the agent's status API over its unix socket. */
function statusGet(path: string): Promise<unknown> {
  return new Promise((done, fail) => {
    const req = httpGet({ socketPath: join(stateDir, "status.sock"), path }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () => done(JSON.parse(text)));
    });
    req.on("error", fail);
  });
}

const WAITS_FOR_LEFTOVERS = "page writes wait for what the last writer here may still have in flight";

describe("pagedisk agent join", () => {
  it("saves a 0600 credential in a 0700 dir; a second join is a no-op", async () => {
    const first = await pagedisk(
      ["agent", "join", "--control-plane", origin(), "--state-dir", stateDir, "--name", NODE],
      { cwd: dir, env: { PAGEDISK_JOIN_TOKEN: joinToken } },
    );
    expect(first).toMatchObject({ code: 0 });
    expect(first.stdout).toContain(`joined ${cp.apiUrl} as node ${NODE}`);
    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
    const file = join(stateDir, "node.json");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(await readFile(file, "utf8")) as Record<string, string>;
    expect(saved).toMatchObject({ controlPlane: cp.apiUrl, node: NODE });
    expect(saved.credential).toMatch(new RegExp(`^pdn_${NODE}_`));
    expect((await api.getNode(NODE)).state).toBe("READY");

    const again = await pagedisk(
      ["agent", "join", "--control-plane", `${origin()}/`, "--state-dir", stateDir],
      { cwd: dir },
    );
    expect(again).toMatchObject({ code: 0 });
    expect(again.stdout).toContain("already joined");
    expect(await readFile(file, "utf8")).toBe(`${JSON.stringify(saved, null, 2)}\n`);

    const elsewhere = await pagedisk(
      ["agent", "join", "--control-plane", "http://127.0.0.1:1", "--state-dir", stateDir],
      { cwd: dir, env: { PAGEDISK_JOIN_TOKEN: joinToken } },
    );
    expect(elsewhere.code).toBe(2);
    expect(elsewhere.stderr).toContain("remove it to join another cluster");
    expect(await readFile(file, "utf8")).toBe(`${JSON.stringify(saved, null, 2)}\n`);
  });

  it("refuses bad command lines with exit 2 and a message, creating nothing", async () => {
    const fresh = join(dir, "never");
    const base = ["--control-plane", origin(), "--state-dir", fresh];
    const cases: Array<[string[], RegExp]> = [
      [["agent", "run", "--state-dir", fresh], /--control-plane/],
      [["agent", "run", "--control-plane", origin()], /--state-dir/],
      [["agent", "run", ...base, "--kernel", "kvm"], /kvm/],
      // The control plane tells the interval now; the option is gone.
      [["agent", "run", ...base, "--heartbeat-interval", "200ms"], /unknown option '--heartbeat-interval'/],
      [["agent", "run", ...base, "--status-listen", "http://x"], /unix:PATH or tcp/],
      [["agent", "run", ...base, "--dirty-granularity", "96KiB"], /power of two from 64KiB to 1GiB/],
      [["agent", "run", ...base, "--dirty-granularity", "32KiB"], /power of two from 64KiB to 1GiB/],
      [["agent", "run", ...base, "--dirty-granularity", "lots"], /invalid size/],
      [["agent", "join", "--control-plane", "ftp://x", "--state-dir", fresh], /must be http/],
      [["agent", "join", ...base, "--name", "Bad Name"], /invalid node name/],
      [["agent", "join", ...base], /join-token/],
      [["agent", "run", ...base, "--kernel", "none"], /join-token/],
    ];
    for (const [args, message] of cases) {
      const r = await pagedisk(args, { cwd: dir });
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(message);
    }
    expect(existsSync(fresh)).toBe(false);
  });
});

describe("pagedisk agent run", () => {
  let v1: Volume;

  it("serves an attached volume: the export answers NBD and writes land in the blob", async () => {
    agent = await startAgent(agentArgs());
    await agent.waitForReport(() => true);
    v1 = await createVolume("vol-a");
    const from = agent.logs.length;
    await api.attachVolume("vol-a", NODE);
    await agent.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-a", from);
    expect((await stat(socketOf("vol-a"))).mode & 0o777).toBe(0o600);

    const { stdout } = await run("nbdinfo", [
      "--json",
      `nbd+unix:///vol-a?socket=${socketOf("vol-a")}`,
    ]);
    expect((JSON.parse(stdout) as { exports: Array<{ "export-size": number }> }).exports[0]).toMatchObject({
      "export-size": MiB,
    });

    const data = Buffer.alloc(8192, 0x5a);
    expect(await write("vol-a", 4096, data)).toBe(0);
    expect(await blobBytes(v1, 4096, 8192)).toEqual(data);

    // The report sent when the volume started serving is recorded; counters alone are
    // not a change (they go with the next report), so the write shows on the status API.
    await agent.waitForReport((vols) => vols.includes("vol-a:1:SERVING"), from);
    const node = await api.getNode(NODE);
    expect(node.volumes).toEqual([expect.objectContaining({ volume: "vol-a", epoch: 1, state: "SERVING" })]);
    expect(node.agentVersion).toBe(AGENT_VERSION);
    expect(node.facts).toMatchObject({ arch: process.arch, os: process.platform });
    expect(node.lastHeartbeatAt).not.toBeNull();
    const served = (await statusGet("/volumes")) as { items: Array<{ name: string; io: Record<string, number> }> };
    expect(served.items.find((i) => i.name === "vol-a")?.io).toMatchObject({ writeOps: 1, bytesWritten: 8192 });
  });

  it("shows the served volume on the status API (unix:DIR/status.sock by default)", async () => {
    const body = await statusGet("/volumes");
    expect(body).toMatchObject({
      items: [expect.objectContaining({ name: "vol-a", epoch: 1, state: "SERVING", socket: socketOf("vol-a") })],
    });
    expect(((await statusGet("/healthz")) as { status: string }).status).toBe("ok");
  });

  it("detaches: the export goes away, the report says STOPPED once, then drops it", async () => {
    const a = agent!;
    const from = a.logs.length;
    await api.detachVolume("vol-a");
    await a.waitForLog((r) => r.msg === "volume detached" && r.volume === "vol-a", from);
    expect(existsSync(socketOf("vol-a"))).toBe(false);
    const stopped = a.logs.indexOf(await a.waitForReport((v) => v.includes("vol-a:1:STOPPED"), from));
    await a.waitForReport((v) => v.length === 0, stopped + 1);
  });

  it("is fenced when the lease moves: the next write gets EIO and volume-failed reaches the events API", async () => {
    const a = agent!;
    let from = a.logs.length;
    const attached = await api.attachVolume("vol-a", NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-a", from);
    expect(await write("vol-a", 0, Buffer.alloc(4096, 1))).toBe(0);

    // What the control plane's failover does to the lease (it also revokes the SAS; the lease alone stops an honest agent).
    const lease = blobOf(v1).getBlobLeaseClient(attached.leaseId);
    await lease.breakLease(0);
    await blobOf(v1).getBlobLeaseClient().acquireLease(-1);

    from = a.logs.length;
    expect(await write("vol-a", 0, Buffer.alloc(4096, 2))).toBe(ERR.EIO);
    await a.waitForLog((r) => r.msg === "volume failed" && r.volume === "vol-a", from);
    await a.waitForReport((v) => v.includes(`vol-a:${attached.epoch}:FAILED`), from);
    const events = await api.listEvents({ volume: "vol-a", type: "volume-failed" });
    expect(events.items).toEqual([
      expect.objectContaining({ node: NODE, volume: "vol-a", data: expect.objectContaining({ reason: "lease-lost", code: "LeaseLost" }) }),
    ]);
    expect(existsSync(socketOf("vol-a"))).toBe(false);
    // The blob still holds what was written before the fence, not after,
    // and the new writer's lease is untouched: the agent never breaks or releases one.
    expect(await blobBytes(v1, 0, 4096)).toEqual(Buffer.alloc(4096, 1));
    expect((await blobOf(v1).getProperties()).leaseState).toBe("leased");
  });

  it("keeps serving and beating while the API is away, and fetches what changed meanwhile when it is back", async () => {
    const a = agent!;
    const v2 = await createVolume("vol-b");
    let from = a.logs.length;
    await api.attachVolume("vol-b", NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-b", from);

    // The registry and the liveness table stay reachable (Azurite is up): only the API goes.
    const inProcess = cp.runtime.cp;
    const key = (await nodes(inProcess.registry).get(NODE))!.value.livenessKey!;
    from = a.logs.length;
    await cp.close();
    const closedAt = Date.now();
    // Heartbeats go to the liveness table, not to the API: they go on landing.
    await vi.waitFor(
      async () => {
        const row = await readLivenessRow(inProcess.registry.liveness, key);
        expect(row?.by).toBe("agent");
        expect(row!.writtenAt).toBeGreaterThan(closedAt);
      },
      { interval: 100, timeout: 10_000 },
    );
    // "connected" means the last beat landed: so it is now.
    const health = (await statusGet("/healthz")) as {
      controlPlane: { connected: boolean };
      problems: Array<{ code: string }>;
    };
    expect(health.controlPlane.connected).toBe(true);
    expect(health.problems.map((p) => p.code)).not.toContain("ControlPlaneUnreachable");
    // A change made meanwhile (the control plane's timers fence and fail over without the
    // API) rings the row: the agent hears it, and cannot fetch it yet.
    const generation = await bumpDesiredGeneration(inProcess, NODE, "replicas");
    await a.waitForLog((r) => r.msg === "cannot fetch the desired state", from);
    const data = Buffer.alloc(4096, 0x33);
    expect(await write("vol-b", 65536, data)).toBe(0);
    expect(await blobBytes(v2, 65536, 4096)).toEqual(data);

    from = a.logs.length;
    cp = await startCp();
    api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
    // The fetch it owed happens; the generation it brings is applied, which is reported. (A
    // report already due when the API came back may go first, with the generation before.)
    await a.waitForReport((v) => v.includes("vol-b:1:SERVING"), from);
    const registry = cp.runtime.cp.registry;
    await vi.waitFor(
      async () => expect((await nodes(registry).get(NODE))!.value.appliedGeneration).toBe(generation),
      { interval: 100, timeout: 10_000 },
    );
  });

  it("after SIGTERM exits 0, and a restarted agent (also after kill -9) serves again with no admin action", async () => {
    expect(await agent!.stop("SIGTERM")).toBe(0);
    expect(agent!.logs.some((r) => r.msg === "agent stopped")).toBe(true);
    // A stopping agent keeps the volume attached: the lease stays with its node.
    const vb = await api.getVolume("vol-b");
    expect((await blobOf(vb).getProperties()).leaseState).toBe("leased");
    expect(vb.status).toMatchObject({ state: "ATTACHED", ownerNode: NODE });

    agent = await startAgent(agentArgs());
    await agent.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-b");
    expect(await write("vol-b", 0, Buffer.alloc(512, 7))).toBe(0);
    // Stopped cleanly, it left nothing of vol-b in flight: nothing to wait for.
    expect(agent.logs.some((r) => r.msg === WAITS_FOR_LEFTOVERS && r.volume === "vol-b")).toBe(false);

    expect(await agent.stop("SIGKILL")).toBe("SIGKILL");
    agent = await startAgent(agentArgs());
    await agent.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-b");
    // Killed, it may have left a Put Page in flight under the same lease: the new run's page
    // writes wait until that can no longer land (at most 22.2 s from when this process began).
    const waits = agent.logs.find((r) => r.msg === WAITS_FOR_LEFTOVERS && r.volume === "vol-b");
    expect(waits?.waitMs).toBeGreaterThan(0);
    expect(waits?.waitMs).toBeLessThanOrEqual(DEFAULT_DOUBT_MS);
    expect(await write("vol-b", 512, Buffer.alloc(512, 8))).toBe(0);
    expect((await blobOf(vb).downloadToBuffer(512, 512)).equals(Buffer.alloc(512, 8))).toBe(true);
  });

  it("serves a volume with two replicas: each write lands in both blobs, both reported ONLINE", async () => {
    const a = agent!;
    const v = await createVolume("vol-two", 2);
    expect(new Set(v.status.replicas.map((r) => r.pool))).toEqual(new Set(["pa", "pb"]));
    const from = a.logs.length;
    const attached = await api.attachVolume("vol-two", NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-two", from);

    const data = randomBytes(64 * 1024);
    expect(await write("vol-two", 192 * 1024, data)).toBe(0);
    expect(await write("vol-two", 0, Buffer.alloc(512, 0x11))).toBe(0);
    const [first, second] = await Promise.all([
      blobOf(v, 0).downloadToBuffer(0, MiB),
      blobOf(v, 1).downloadToBuffer(0, MiB),
    ]);
    expect(first.subarray(192 * 1024, 256 * 1024).equals(data)).toBe(true);
    expect(first.subarray(0, 512).equals(Buffer.alloc(512, 0x11))).toBe(true);
    expect(second.equals(first)).toBe(true);

    await a.waitForReport((vols) => vols.includes(`vol-two:${attached.epoch}:SERVING`), from);
    const node = await api.getNode(NODE);
    const reported = node.volumes.find((r) => r.volume === "vol-two");
    expect(reported?.replicas).toEqual(
      expect.arrayContaining(v.status.replicas.map((r) => expect.objectContaining({ id: r.id, state: "ONLINE" }))),
    );
    expect(reported?.replicas).toHaveLength(2);
    const status = (await statusGet("/volumes")) as { items: Array<{ name: string; replicas: unknown[] }> };
    expect(status.items.find((i) => i.name === "vol-two")?.replicas).toEqual(
      expect.arrayContaining(
        v.status.replicas.map((r) => expect.objectContaining({ id: r.id, pool: r.pool, state: "ONLINE" })),
      ),
    );
    expect((await api.listEvents({ volume: "vol-two", type: "storage-failure" })).items).toEqual([]);
    // The replicas' metadata names no replica offline: nothing was missed.
    for (const i of [0, 1]) {
      expect((await blobOf(v, i).getProperties()).metadata).not.toHaveProperty("pagediskoffline");
    }
  });

  it("stops with exit 3 and says why (once) when the node is removed, and deletes the liveness SAS it kept", async () => {
    const a = agent!;
    const livenessFile = join(stateDir, "liveness.json");
    expect(existsSync(livenessFile)).toBe(true);
    for (const name of ["vol-a", "vol-b", "vol-two"]) await api.detachVolume(name);
    await a.waitForReport((v) => v.length === 0, a.logs.length);
    await api.removeNode(NODE);
    expect(await a.exited).toBe(3);
    expect(a.logs.filter((r) => String(r.msg).includes("refused this node's credential"))).toHaveLength(1);
    expect(existsSync(livenessFile)).toBe(false);
  });
});

describe("pagedisk agent run --kernel fuse", () => {
  it("binds the volume to a loop device: the device is in the node's report and its writes are in the blob", async () => {
    const fuseState = join(dir, "fuse-state");
    const fuse = await startAgent(
      [
        "--control-plane",
        origin(),
        "--state-dir",
        fuseState,
        "--name",
        "vm-agent-fuse",
        "--kernel",
        "fuse",
      ],
      { PAGEDISK_JOIN_TOKEN: joinToken },
    );
    try {
      const v = await createVolume("vol-fuse");
      const from = fuse.logs.length;
      await api.attachVolume("vol-fuse", "vm-agent-fuse");
      const serving = await fuse.waitForLog((r) => r.msg === "volume serving" && r.volume === "vol-fuse", from);
      const device = serving.device as string;
      expect(device).toMatch(/^\/dev\/loop\d+$/);
      await fuse.waitForReport((vols) => vols.includes("vol-fuse:1:SERVING"), from);
      expect((await api.getNode("vm-agent-fuse")).volumes[0]).toMatchObject({ volume: "vol-fuse", device });

      const data = Buffer.alloc(4096, 0xc3);
      await writeDevice(device, 12288, data);
      expect(await blobBytes(v, 12288, 4096)).toEqual(data);

      const detachedFrom = fuse.logs.length;
      await api.detachVolume("vol-fuse");
      await fuse.waitForLog((r) => r.msg === "volume detached" && r.volume === "vol-fuse", detachedFrom);
      const { stdout } = await run("losetup", ["-a"]);
      expect(stdout).not.toContain(`${device}:`);
    } finally {
      expect(await fuse.stop("SIGTERM")).toBe(0);
    }
  });
});
