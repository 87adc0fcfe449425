/**
 * The status app in process (`app.request`), over real Volumes served by a
 * real NbdServer and driven by qemu-io, a client nobody here wrote.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LATENCY_BOUNDS_US } from "../../agent/engine/latency.ts";
import { statusApp } from "../../agent/status/app.ts";
import type { NodeStatus, ServedVolume, StatusSource } from "../../agent/status/source.ts";
import { runTool } from "../harness/tools.ts";
import { type MemoryServer, serveMemory } from "../interop/memory-server.ts";
import { parseExposition } from "./exposition.ts";

const MiB = 1024 * 1024;

describe("status app", () => {
  let srv: MemoryServer;
  let node: NodeStatus;
  let served: ServedVolume[];
  let source: StatusSource;

  beforeAll(async () => {
    srv = await serveMemory({ vol1: { size: 64 * MiB }, vol2: { size: 16 * MiB } });
    node = {
      name: "node-a",
      version: "0.1.0",
      controlPlane: "http://127.0.0.1:7071/api",
      connected: true,
      lastHeartbeatAt: "2025-01-01T00:00:00.000Z",
    };
    served = [...srv.volumes].map(([name, volume], i) => ({
      name,
      epoch: 7 + i,
      state: "SERVING" as const,
      sizeBytes: volume.size,
      socket: srv.socket,
      device: i === 0 ? "/dev/nbd0" : null,
      metrics: () => volume.metrics(),
    }));
    source = { node: () => node, volumes: () => served };
    // Three 4 KiB writes, five 4 KiB reads, one 64 KiB read, to vol1 only.
    const commands = [
      "write -P 1 0 4k",
      "write -P 2 1M 4k",
      "write -P 3 2M 4k",
      "read -P 1 0 4k",
      "read -P 2 1M 4k",
      "read -P 3 2M 4k",
      "read 0 4k",
      "read 8M 4k",
      "read 4M 64k",
    ];
    await runTool("qemu-io", ["-f", "raw", srv.uri("vol1"), ...commands.flatMap((c) => ["-c", c])]);
  });

  afterAll(async () => {
    await srv?.close();
  });

  it("GET /metrics shows the requests made, per volume, in Prometheus text format", async () => {
    const res = await statusApp(source).request("/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const exp = parseExposition(await res.text());
    const vol1 = srv.volumes.get("vol1")!.metrics();

    expect(exp.types.get("pagedisk_requests_total")).toBe("counter");
    expect(exp.value("pagedisk_requests_total", { volume: "vol1", op: "write" })).toBe(3);
    expect(exp.value("pagedisk_requests_total", { volume: "vol1", op: "read" })).toBe(6);
    expect(exp.value("pagedisk_requests_total", { volume: "vol1", op: "flush" })).toBe(
      vol1.client.flushes,
    );
    expect(exp.value("pagedisk_request_bytes_total", { volume: "vol1", op: "write" })).toBe(
      3 * 4096,
    );
    expect(exp.value("pagedisk_request_bytes_total", { volume: "vol1", op: "read" })).toBe(
      5 * 4096 + 65536,
    );
    expect(exp.value("pagedisk_requests_total", { volume: "vol2", op: "write" })).toBe(0);
    expect(exp.value("pagedisk_request_errors_total", { volume: "vol1" })).toBe(0);
    expect(exp.value("pagedisk_throttle_pauses_total", { volume: "vol1" })).toBe(0);
    expect(exp.value("pagedisk_queue_depth", { volume: "vol1" })).toBe(0);
    expect(exp.types.get("pagedisk_queue_depth")).toBe("gauge");
    expect(exp.value("pagedisk_coalesce_backend_writes_total", { volume: "vol1" })).toBe(
      vol1.coalesce.writeBatches,
    );
    expect(exp.value("pagedisk_coalesce_merged_writes_total", { volume: "vol1" })).toBe(
      vol1.coalesce.mergedWrites,
    );
    expect(exp.value("pagedisk_volume_size_bytes", { volume: "vol2" })).toBe(16 * MiB);
    expect(exp.value("pagedisk_volume_epoch", { volume: "vol2" })).toBe(8);
    expect(exp.value("pagedisk_volume_state", { volume: "vol1", state: "SERVING" })).toBe(1);
    expect(exp.value("pagedisk_volume_state", { volume: "vol1", state: "FAILED" })).toBe(0);
    expect(exp.value("pagedisk_control_plane_connected")).toBe(1);
    // Process metrics, on this app's own registry.
    expect(exp.find("process_cpu_user_seconds_total")).toHaveLength(1);
    expect(exp.find("nodejs_heap_size_used_bytes")).toHaveLength(1);
  });

  it("GET /metrics exposes the latency histograms the meter aggregated", async () => {
    const exp = parseExposition(await (await statusApp(source).request("/metrics")).text());
    const name = "pagedisk_request_duration_seconds";
    expect(exp.types.get(name)).toBe("histogram");
    const writes = { volume: "vol1", op: "write" };
    expect(exp.value(`${name}_count`, writes)).toBe(3);
    expect(exp.value(`${name}_count`, { volume: "vol1", op: "read" })).toBe(6);
    const buckets = exp.find(`${name}_bucket`, writes);
    expect(buckets.map((b) => b.labels.le)).toEqual([
      ...LATENCY_BOUNDS_US.map((us) => String(us / 1e6)),
      "+Inf",
    ]);
    expect(buckets[0]!.labels.le).toBe("0.00005");
    // Cumulative, ending at the count.
    for (let i = 1; i < buckets.length; i++) {
      expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
    }
    expect(buckets.at(-1)!.value).toBe(3);
    const sum = exp.value(`${name}_sum`, writes);
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeCloseTo(srv.volumes.get("vol1")!.metrics().latency.write.sumMs / 1000, 9);
    // Every kind, every volume: 5 kinds x 2 volumes.
    expect(exp.find(`${name}_count`)).toHaveLength(10);
  });

  it("GET /volumes lists what is served, with its I/O since open", async () => {
    const res = await statusApp(source).request("/volumes");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { items: Array<Record<string, unknown>> };
    expect(body.items.map((v) => v.name)).toEqual(["vol1", "vol2"]);
    expect(body.items[0]).toMatchObject({
      name: "vol1",
      epoch: 7,
      state: "SERVING",
      sizeBytes: 64 * MiB,
      socket: srv.socket,
      device: "/dev/nbd0",
      io: { readOps: 6, writeOps: 3, bytesWritten: 3 * 4096, errors: 0, queueDepth: 0 },
    });
    const latency = body.items[0]!.latencyMs as { write: { p50: number; p99: number } };
    expect(latency.write.p50).toBeGreaterThan(0);
    expect(latency.write.p99).toBeGreaterThanOrEqual(latency.write.p50);
    expect(body.items[1]).toMatchObject({ name: "vol2", device: null, io: { writeOps: 0 } });
  });

  it("GET /healthz is 200 and lists failed volumes and an unreachable control plane", async () => {
    const app = statusApp(source);
    const ok = await app.request("/healthz");
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({
      status: "ok",
      node: { name: "node-a", version: "0.1.0" },
      volumes: { serving: 2, failed: 0 },
      problems: [],
    });

    const before = { node, served };
    node = { ...node, connected: false };
    served = [{ ...served[0]!, state: "FAILED" }, { ...served[1]!, state: "DEGRADED" }];
    try {
      const bad = await app.request("/healthz");
      expect(bad.status).toBe(200);
      const body = (await bad.json()) as { status: string; problems: Array<{ code: string }> };
      expect(body.status).toBe("ok");
      expect(body.problems.map((p) => p.code).sort()).toEqual([
        "ControlPlaneUnreachable",
        "VolumeDegraded",
        "VolumeFailed",
      ]);
      const exp = parseExposition(await (await app.request("/metrics")).text());
      expect(exp.value("pagedisk_volume_state", { volume: "vol1", state: "FAILED" })).toBe(1);
      expect(exp.value("pagedisk_control_plane_connected")).toBe(0);
    } finally {
      ({ node, served } = before);
    }
  });

  it("answers unknown paths 404 and other methods 405, in the error shape", async () => {
    const app = statusApp(source);
    const missing = await app.request("/volumes/vol1");
    expect(missing.status).toBe(404);
    const body404 = (await missing.json()) as { error: { code: string; message: string } };
    expect(body404.error.code).toBe("NotFound");
    expect(body404.error.message).toContain("/volumes/vol1");

    for (const method of ["POST", "PUT", "DELETE"]) {
      const res = await app.request("/metrics", { method });
      expect(res.status).toBe(405);
      expect(res.headers.get("allow")).toBe("GET, HEAD");
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
        "MethodNotAllowed",
      );
    }
    const head = await app.request("/healthz", { method: "HEAD" });
    expect(head.status).toBe(200);
  });

  it("answers an error inside a handler with a bare 500 and reports it", async () => {
    const reported: unknown[] = [];
    const broken: StatusSource = {
      node: () => node,
      volumes: () => {
        throw new Error("secret detail");
      },
    };
    const res = await statusApp(broken, { report: (e) => reported.push(e) }).request("/volumes");
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: { code: "Internal", message: "internal error" } });
    expect(reported).toHaveLength(1);
  });
});
