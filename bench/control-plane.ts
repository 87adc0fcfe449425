/**
 * The control plane section of `npm run bench`: measured in process
 * against Azurite (Table + Blob, in memory) through the real HTTP app of
 * `startLocalControlPlane`, with the registry's Table endpoint behind the
 * counting fault proxy so that Table transactions are counted where the
 * service would bill them.
 *
 * Attach latency, p50 and p99 of `POST /volumes/{name}/attach` (the API's
 * part; bench/agent.ts measures through to the agent serving), over
 * `ROUNDS` rounds in which each of `VOLUMES` volumes is attached to one of
 * two joined nodes (the other one than the round before) and then
 * detached, with the Table transactions an attach and its detach cost.
 * What heartbeats, reports and the sweeper cost is in bench/serverless.ts.
 *
 * Env: PAGEDISK_BENCH_CP_VOLUMES (default 40), PAGEDISK_BENCH_CP_ROUNDS (2).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IssuedToken } from "../contract/token.ts";
import { startLocalControlPlane } from "../functions/local.ts";
import { startAzurite } from "../test/harness/azurite.ts";
import { startFaultProxy } from "../test/harness/fault-proxy.ts";
import { ms, percentile, sectionRows, type TextRow } from "./rows.ts";

const VOLUMES = Number(process.env.PAGEDISK_BENCH_CP_VOLUMES ?? 40);
const ROUNDS = Number(process.env.PAGEDISK_BENCH_CP_ROUNDS ?? 2);
const ATTACH_P50_TARGET_MS = 1000;
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
    for (const name of ["vm-a", "vm-b"]) await call("POST", "/nodes/join", { name }, 201, token.token);
    const names = Array.from({ length: VOLUMES }, (_, i) => `bench-${i}`);
    for (const name of names) await call("POST", "/volumes", { name, sizeBytes: 1024 * 1024 }, 201);

    // --- 1. attach latency, and what an attach and its detach cost in Table transactions
    console.error(`control plane: ${ROUNDS} x ${VOLUMES} attaches and detaches`);
    const latencies: number[] = [];
    let attachTx = 0;
    let detachTx = 0;
    for (let round = 0; round < ROUNDS; round++) {
      proxy.resetCounts();
      for (const [i, name] of names.entries()) {
        const node = (i + round) % 2 === 0 ? "vm-a" : "vm-b";
        const t0 = performance.now();
        await call("POST", `/volumes/${name}/attach`, { node }, 200);
        latencies.push(performance.now() - t0);
      }
      attachTx += proxy.received();
      proxy.resetCounts();
      for (const name of names) await call("POST", `/volumes/${name}/detach`, undefined, 200);
      detachTx += proxy.received();
    }
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    const perAttach = attachTx / latencies.length;
    const perDetach = detachTx / latencies.length;
    rows.push(atMost(`attach p50 (n=${latencies.length})`, p50, ms(p50), `${ATTACH_P50_TARGET_MS} ms`, ATTACH_P50_TARGET_MS));
    rows.push(reported(`attach p99 (n=${latencies.length})`, ms(p99)));
    rows.push(
      reported(
        `Table transactions per attach and its detach (n=${latencies.length})`,
        `${(perAttach + perDetach).toFixed(1)} (attach ${perAttach.toFixed(1)}, detach ${perDetach.toFixed(1)})`,
      ),
    );

    if (errors.length > 0) throw new Error(`control plane reported:\n${errors.join("\n")}`);
  } finally {
    await local.close();
    await proxy.close();
    await azurite.dispose();
    await rm(stateDir, { recursive: true, force: true });
  }
  return rows;
}
