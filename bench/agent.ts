/**
 * The agent section of `npm run bench` (issue 4, "Benchmark"): real agent
 * processes (`dist/pagedisk.mjs agent run --kernel none`, spawned as the
 * tests spawn them) against the control plane in process and Azurite (Blob
 * + Table, in memory), every setting at its default: heartbeats every 2 s
 * to the liveness table, a sweeper pass every 7.5 s, SUSPECT after 4 s,
 * LOST after 8 s.
 *
 * 1. Agent start: spawn to the "running" line, node.json already saved (no join).
 * 2. Resident memory of an idle agent, then with `RSS_VOLUMES` volumes served.
 * 3. Attach latency: from `POST /volumes/{name}/attach` to an NBD handshake
 *    (OPT_GO) succeeding on the export's unix socket (targets p50 <= 1.5 s,
 *    p99 <= 3 s: the agent hears of it at its next beat, within 2 s),
 *    detached in between. Peer: a managed data disk, 10-15 s (documented).
 * 4. Failover: the owner is frozen with SIGSTOP; from its last heartbeat as
 *    the control plane recorded it to a FUA write through the other node's
 *    export succeeding (target <= 15 s). Rounds alternate between the nodes.
 * 5. Size of the agent bundle, plain and gzipped.
 *
 * The export is probed by connect attempts woken by fs.watch on the sockets
 * directory, with short retries besides: a bench may poll, a test may not.
 *
 * Env: PAGEDISK_BENCH_AGENT_STARTS (default 5), PAGEDISK_BENCH_AGENT_ATTACHES
 * (50), PAGEDISK_BENCH_AGENT_FAILOVERS (3).
 */
import { existsSync, type FSWatcher, watch } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { ApiClient } from "../agent/control/api-client.ts";
import { startLocalControlPlane } from "../functions/local.ts";
import { type AgentProcess, startAgent } from "../test/control/agent-process.ts";
import { startAzurite } from "../test/harness/azurite.ts";
import { BIN } from "../test/harness/serve.ts";
import { CMD, FLAG, RawClient } from "../test/nbd/raw-client.ts";
import { ms, percentile, sectionRows, type TextRow } from "./rows.ts";

const STARTS = Number(process.env.PAGEDISK_BENCH_AGENT_STARTS ?? 5);
const ATTACHES = Number(process.env.PAGEDISK_BENCH_AGENT_ATTACHES ?? 50);
const FAILOVERS = Number(process.env.PAGEDISK_BENCH_AGENT_FAILOVERS ?? 3);
const RSS_VOLUMES = 10;
const ATTACH_P50_TARGET_MS = 1500;
const ATTACH_P99_TARGET_MS = 3000;
const FAILOVER_TARGET_MS = 15_000;
const SECTION = "agent (Azurite, --kernel none)";
const MiB = 1024 * 1024;
const VOLUME_BYTES = 64 * MiB;
/** Next connect attempt at the latest this long after the last, fs.watch or not. */
const RETRY_MS = 20;
/** One handshake that takes this long has hung: the attempt counts as failed. */
const PROBE_TIMEOUT_MS = 5_000;
/** Longer than any failover should take: the bench fails rather than hangs. */
const GIVE_UP_MS = 60_000;
const PROBE = Buffer.alloc(4096, 0xa5);

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
const { atMost, reported } = sectionRows(SECTION);

export async function agentSection(): Promise<TextRow[]> {
  const rows: TextRow[] = [];
  const azurite = await startAzurite({ table: true, inMemory: true });
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-bench-agent-"));
  const errors: string[] = [];
  // Default settings: beats every 2 s, a pass every 7.5 s, SUSPECT after 4 s, LOST after 8 s.
  const cp = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir: join(dir, "cp"),
    log: (line) => {
      if (line.startsWith("pagedisk control plane:")) errors.push(line);
    },
  });
  const agents = new Map<string, AgentProcess>();
  try {
    const api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
    const origin = new URL(cp.apiUrl).origin;
    const stateDir = (node: string) => join(dir, node);
    const socketDir = (node: string) => join(stateDir(node), "sockets");
    const socketOf = (node: string, volume: string) => join(socketDir(node), `${volume}.sock`);
    const args = (node: string) => ["--control-plane", origin, "--state-dir", stateDir(node), "--kernel", "none"];
    /** Start a node's agent; the first start joins, with a name and a token. */
    const start = async (node: string, joinToken?: string) => {
      const agent = await startAgent(
        joinToken ? [...args(node), "--name", node] : args(node),
        joinToken ? { PAGEDISK_JOIN_TOKEN: joinToken } : {},
      );
      agents.set(node, agent);
      return agent;
    };
    /** The export of `volume` on `node` answers (with `write`, takes a FUA write too). */
    const answers = (node: string, volume: string, write = false) =>
      until(socketDir(node), () => exportAnswers(socketOf(node, volume), volume, write), `${volume} on ${node}`);

    await api.createPool({
      name: "bench",
      container: "bench-disks",
      auth: { kind: "connectionString", connectionString: azurite.connectionString },
    });
    const token = (await api.createToken()).token;

    // --- 1. start time, with the identity saved by a first (joining) start
    console.error(`agent: ${STARTS} starts`);
    await (await start("bench-a", token)).stop();
    const starts: number[] = [];
    let a: AgentProcess | undefined;
    for (let i = 0; i < STARTS; i++) {
      await a?.stop();
      const t0 = performance.now();
      a = await start("bench-a");
      starts.push(performance.now() - t0);
    }
    a ??= await start("bench-a");
    rows.push(reported(`start to running line, median (n=${starts.length})`, ms(percentile(starts, 50))));

    // --- 2a. memory with nothing to serve, once a report is recorded
    await a.waitForReport(() => true);
    const idleRss = await rssBytes(a.proc.pid!);
    rows.push(reported("RSS, 0 volumes", mib(idleRss)));

    // --- 3. attach latency
    console.error(`agent: ${ATTACHES} attaches`);
    await api.createVolume({ name: "lat", sizeBytes: VOLUME_BYTES });
    const attaches: number[] = [];
    const answered: number[] = [];
    for (let i = 0; i < ATTACHES; i++) {
      const from = a.logs.length;
      const t0 = performance.now();
      await api.attachVolume("lat", "bench-a");
      answered.push(performance.now() - t0);
      await answers("bench-a", "lat");
      attaches.push(performance.now() - t0);
      await api.detachVolume("lat");
      await a.waitForLog((r) => r.msg === "volume detached" && r.volume === "lat", from);
    }
    const p50 = percentile(attaches, 50);
    rows.push(
      atMost(
        `attach to NBD answering, p50 (n=${attaches.length})`,
        p50,
        `${ms(p50)} (API ${ms(percentile(answered, 50))})`,
        "1.5 s",
        ATTACH_P50_TARGET_MS,
        "managed data disk 10-15 s (documented)",
      ),
    );
    const p99 = percentile(attaches, 99);
    rows.push(atMost(`attach to NBD answering, p99 (n=${attaches.length})`, p99, ms(p99), "3 s", ATTACH_P99_TARGET_MS));

    // --- 2b. memory with RSS_VOLUMES volumes served, each written once
    console.error(`agent: ${RSS_VOLUMES} volumes attached`);
    const many = Array.from({ length: RSS_VOLUMES }, (_, i) => `rss-${i}`);
    for (const name of many) {
      await api.createVolume({ name, sizeBytes: VOLUME_BYTES });
      await api.attachVolume(name, "bench-a");
    }
    for (const name of many) await answers("bench-a", name, true);
    const busyRss = await rssBytes(a.proc.pid!);
    rows.push(
      reported(
        `RSS, ${RSS_VOLUMES} volumes`,
        `${mib(busyRss)} (+${mib((busyRss - idleRss) / RSS_VOLUMES)} per volume)`,
      ),
    );
    const drained = a.logs.length;
    for (const name of many) await api.detachVolume(name);
    await a.waitForReport((v) => v.length === 0, drained);

    // --- 4. failover, alternating the frozen owner between two nodes
    console.error(`agent: ${FAILOVERS} failovers (about 11 s each)`);
    await start("bench-b", token);
    await api.createVolume({ name: "fo", sizeBytes: VOLUME_BYTES });
    await api.attachVolume("fo", "bench-a");
    let owner = "bench-a";
    let since = a.logs.length;
    const failovers: number[] = [];
    for (let i = 0; i < FAILOVERS; i++) {
      const other = owner === "bench-a" ? "bench-b" : "bench-a";
      const victim = agents.get(owner)!;
      const survivor = agents.get(other)!;
      // The owner serves the volume and the control plane has heard so.
      await answers(owner, "fo", true);
      await victim.waitForReport((v) => v.some((e) => e.startsWith("fo:") && e.endsWith(":SERVING")), since);
      since = survivor.logs.length;
      victim.proc.kill("SIGSTOP");
      await answers(other, "fo", true);
      const writableAt = Date.now();
      // Read afterwards: a beat in flight when the owner froze may still have landed.
      const lastBeat = (await api.getNode(owner)).lastHeartbeatAt;
      if (lastBeat === null) throw new Error(`${owner} never heartbeat`);
      failovers.push(writableAt - Date.parse(lastBeat));
      const resumed = victim.logs.length;
      victim.proc.kill("SIGCONT");
      // READY again, and its stale export gone, before it may take the volume back.
      await victim.waitForReport((v) => !v.some((e) => e.startsWith("fo:")), resumed);
      owner = other;
    }
    if (failovers.length > 0) {
      const runs = failovers.map((t) => (t / 1000).toFixed(1)).join(", ");
      const worst = Math.max(...failovers);
      rows.push(
        atMost(
          `failover, last heartbeat to writable, worst of ${failovers.length}`,
          worst,
          `${(worst / 1000).toFixed(1)} s (runs ${runs} s; median ${(percentile(failovers, 50) / 1000).toFixed(1)} s)`,
          "15 s",
          FAILOVER_TARGET_MS,
        ),
      );
    }

    // --- 5. bundle size
    const bundle = await readFile(BIN);
    rows.push(
      reported(
        "bundle dist/pagedisk.mjs",
        `${bundle.length.toLocaleString("en-US")} B (${mib(bundle.length)}), gzip ${gzipSync(bundle).length.toLocaleString("en-US")} B`,
      ),
    );
    if (errors.length > 0) throw new Error(`control plane reported:\n${errors.join("\n")}`);
  } finally {
    // SIGKILL ends a process frozen by SIGSTOP too.
    await Promise.all([...agents.values()].map((agent) => agent.stop("SIGKILL")));
    await cp.close();
    await azurite.dispose();
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

/** Resident set size of a process, from /proc/<pid>/status. */
async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kib) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kib[1]) * 1024;
}

/**
 * One NBD handshake on `socket` for export `volume` (with `write`, then one
 * FUA write at offset 0): true when the export answered, false on any
 * failure, the socket not being there yet included.
 */
async function exportAnswers(socket: string, volume: string, write: boolean): Promise<boolean> {
  let client: RawClient | undefined;
  // A server that accepts and never answers must not stall the bench: closing fails the reads.
  const timer = setTimeout(() => client?.close(), PROBE_TIMEOUT_MS);
  try {
    client = await RawClient.connect(socket);
    await client.handshake(volume);
    if (!write) return true;
    const reply = await client.request({ type: CMD.WRITE, handle: 1n, offset: 0, flags: FLAG.FUA, payload: PROBE });
    return reply.error === 0;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    client?.close();
  }
}

/** Try `attempt` until it succeeds, again on every change in `dir` and every RETRY_MS. */
async function until(dir: string, attempt: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + GIVE_UP_MS;
  while (!(await attempt())) {
    if (performance.now() > deadline) throw new Error(`agent bench: ${what} not answering after ${GIVE_UP_MS} ms`);
    await changeIn(dir, RETRY_MS);
  }
}

/** Resolves on the next change in `dir` (in its parent while it does not exist), or after `ms`. */
function changeIn(dir: string, ms: number): Promise<void> {
  return new Promise((done) => {
    let watcher: FSWatcher | undefined;
    const finish = () => {
      clearTimeout(timer);
      watcher?.close();
      done();
    };
    const timer = setTimeout(finish, ms);
    try {
      watcher = watch(existsSync(dir) ? dir : dirname(dir), finish);
    } catch {
      // Removed between the check and the watch: the timer still wakes us.
    }
  });
}
