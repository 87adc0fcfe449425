/**
 * The control plane section of `npm run bench` (issue 3, "Benchmark"):
 * measured in process against Azurite (Table + Blob, in memory) through the
 * real HTTP app of `startLocalControlPlane`, with the registry's Table
 * endpoint behind the counting fault proxy so that Table transactions are
 * counted where the service would bill them.
 *
 * 1. Attach latency, p50 and p99 of `POST /volumes/{name}/attach` (target
 *    p50 <= 1 s), over `ROUNDS` rounds of `VOLUMES` volumes on two joined nodes.
 * 2. Table transactions per heartbeat without events (target <= 2).
 * 3. One sweeper pass over 1,000 nodes seeded with our registry code
 *    (a table prefix of their own): steady state, and with 10% overdue.
 *
 * Env: PAGEDISK_BENCH_CP_VOLUMES (default 40), PAGEDISK_BENCH_CP_ROUNDS (2),
 * PAGEDISK_BENCH_CP_HEARTBEATS (50), PAGEDISK_BENCH_CP_NODES (1000).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Attachment } from "../contract/attachment.ts";
import type { JoinResponse } from "../contract/node.ts";
import type { IssuedToken } from "../contract/token.ts";
import { controlPlane } from "../functions/control-plane.ts";
import { DEFAULT_SWEEP_POLICY, sweep } from "../functions/health/sweep.ts";
import { startLocalControlPlane } from "../functions/local.ts";
import { nodes } from "../functions/registry/nodes.ts";
import { openRegistry } from "../functions/registry/tables.ts";
import { startAzurite } from "../test/harness/azurite.ts";
import { startFaultProxy } from "../test/harness/fault-proxy.ts";
import { ms, percentile, sectionRows, type TextRow } from "./rows.ts";

const VOLUMES = Number(process.env.PAGEDISK_BENCH_CP_VOLUMES ?? 40);
const ROUNDS = Number(process.env.PAGEDISK_BENCH_CP_ROUNDS ?? 2);
const HEARTBEATS = Number(process.env.PAGEDISK_BENCH_CP_HEARTBEATS ?? 50);
const SWEEP_NODES = Number(process.env.PAGEDISK_BENCH_CP_NODES ?? 1000);
const ATTACH_P50_TARGET_MS = 1000;
const HEARTBEAT_TX_TARGET = 2;
const SECTION = "control plane (Azurite)";

const { atMost, reported } = sectionRows(SECTION);

export async function controlPlaneSection(): Promise<TextRow[]> {
  const rows: TextRow[] = [];
  const azurite = await startAzurite({ table: true, inMemory: true });
  const proxy = await startFaultProxy(azurite.tableEndpoint!);
  const stateDir = await mkdtemp(join(tmpdir(), "pagedisk-bench-cp-"));
  // The same account, with its Table endpoint behind the counting proxy.
  const viaProxy = azurite.connectionString.replace(
    /TableEndpoint=[^;]+/,
    `TableEndpoint=${proxy.blobEndpoint}`,
  );
  const errors: string[] = [];
  const local = await startLocalControlPlane({
    connectionString: viaProxy,
    env: {},
    port: 0,
    stateDir,
    // No background sweep while measuring.
    sweepIntervalMs: 3_600_000,
    // The new admin key is told here too; only unexpected errors count.
    log: (line) => {
      if (line.startsWith("pagedisk control plane:")) errors.push(line);
    },
  });
  try {
    const api = local.apiUrl;
    const call = async <T>(method: string, path: string, body: unknown, status: number, bearer = local.adminKey): Promise<T> => {
      const res = await fetch(`${api}${path}`, {
        method,
        headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      if (res.status !== status) throw new Error(`${method} ${path}: expected ${status}, got ${res.status}: ${text}`);
      return (text ? JSON.parse(text) : undefined) as T;
    };

    // --- setup: a pool, two joined nodes, VOLUMES volumes
    console.error(`control plane: setup (${VOLUMES} volumes, 2 nodes)`);
    await call("POST", "/pools", { name: "bench", container: "bench-disks", auth: { kind: "connectionString", connectionString: azurite.connectionString } }, 201);
    const token = await call<IssuedToken>("POST", "/tokens", {}, 201);
    const credentials = new Map<string, string>();
    for (const name of ["vm-a", "vm-b"]) {
      const joined = await call<JoinResponse>("POST", "/nodes/join", { name }, 201, token.token);
      credentials.set(name, joined.credential);
    }
    const names = Array.from({ length: VOLUMES }, (_, i) => `bench-${i}`);
    for (const name of names) await call("POST", "/volumes", { name, sizeBytes: 1024 * 1024 }, 201);

    // --- 1. attach latency
    console.error(`control plane: ${ROUNDS} x ${VOLUMES} attaches`);
    const latencies: number[] = [];
    const attached = new Map<string, Attachment>();
    for (let round = 0; round < ROUNDS; round++) {
      if (round > 0) for (const name of names) await call("POST", `/volumes/${name}/detach`, undefined, 200);
      for (const [i, name] of names.entries()) {
        const node = (i + round) % 2 === 0 ? "vm-a" : "vm-b";
        const t0 = performance.now();
        const a = await call<Attachment>("POST", `/volumes/${name}/attach`, { node }, 200);
        latencies.push(performance.now() - t0);
        attached.set(name, a);
      }
    }
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    rows.push(atMost(`attach p50 (n=${latencies.length})`, p50, ms(p50), `${ATTACH_P50_TARGET_MS} ms`, ATTACH_P50_TARGET_MS));
    rows.push(reported(`attach p99 (n=${latencies.length})`, ms(p99)));

    // --- 2. Table transactions per heartbeat (volume reports, no events)
    console.error(`control plane: ${HEARTBEATS} heartbeats`);
    const reports = [...attached.values()]
      .filter((a) => a.node === "vm-a")
      .slice(0, 2)
      .map((a) => ({ volume: a.volume, epoch: a.epoch, state: "SERVING" }));
    proxy.resetCounts();
    const hbT0 = performance.now();
    for (let i = 0; i < HEARTBEATS; i++) {
      await call("POST", "/nodes/vm-a/heartbeat", { agentVersion: "1.0.0", volumes: reports }, 200, credentials.get("vm-a"));
    }
    const hbMs = (performance.now() - hbT0) / HEARTBEATS;
    const perBeat = proxy.received() / HEARTBEATS;
    rows.push(
      atMost(`Table tx / heartbeat (${reports.length} volumes, no events)`, perBeat, `${perBeat.toFixed(2)} tx (${ms(hbMs)})`, `${HEARTBEAT_TX_TARGET} tx`, HEARTBEAT_TX_TARGET),
    );

    // --- 3. sweeper over SWEEP_NODES nodes, in tables of their own
    console.error(`control plane: seeding ${SWEEP_NODES} nodes`);
    const registry = await openRegistry(viaProxy, { prefix: "sweepbench" });
    const t0 = Date.now();
    const { suspectAfterMs } = DEFAULT_SWEEP_POLICY;
    const overdue = Math.round(SWEEP_NODES / 10);
    // The overdue tenth last beat `suspectAfter` - 2 s before t0: silent for less
    // than `suspectAfter` at t0 + 1 s (steady), for more (but not `lostAfter`) at t0 + 3 s.
    const seed = (i: number) =>
      nodes(registry).insert({
        name: `sw-${String(i).padStart(4, "0")}`,
        state: "READY",
        cordoned: false,
        agentVersion: "1.0.0",
        facts: {},
        volumes: [],
        credentialSha256: "0".repeat(64),
        joinedAt: new Date(t0 - 3_600_000).toISOString(),
        lastHeartbeatAt: new Date(i < overdue ? t0 - (suspectAfterMs - 2_000) : t0).toISOString(),
      });
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < SWEEP_NODES) await seed(next++);
      }),
    );
    const pass = async (clockMs: number) => {
      const cp = controlPlane({ registry, now: () => new Date(clockMs), report: (e) => errors.push(String(e)) });
      proxy.resetCounts();
      const start = performance.now();
      const report = await sweep(cp, DEFAULT_SWEEP_POLICY);
      return { tx: proxy.received(), ms: performance.now() - start, report };
    };
    console.error("control plane: sweeping");
    const steady = await pass(t0 + 1_000);
    if (steady.report.suspect.length + steady.report.lost.length !== 0) throw new Error("steady sweep changed nodes");
    rows.push(reported(`sweep ${SWEEP_NODES} nodes, steady`, `${steady.tx} tx, ${ms(steady.ms)}`));
    const late = await pass(t0 + 3_000);
    if (late.report.suspect.length !== overdue) throw new Error(`expected ${overdue} suspect, got ${late.report.suspect.length}`);
    rows.push(reported(`sweep ${SWEEP_NODES} nodes, ${overdue} overdue`, `${late.tx} tx, ${ms(late.ms)}`));
    if (errors.length > 0) throw new Error(`control plane reported:\n${errors.join("\n")}`);
  } finally {
    await local.close();
    await proxy.close();
    await azurite.dispose();
    await rm(stateDir, { recursive: true, force: true });
  }
  return rows;
}
