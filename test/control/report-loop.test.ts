/**
 * ReportLoop against the real control plane: the API on a real port over
 * Azurite (served-control-plane.ts), reached with a real NodeClient (a
 * subclass that only counts the reports in flight, so a test knows when a
 * look is over). The loop's monotonic clock is the test's, moved by hand,
 * and `soon()` makes it look at once: each case is a sequence of looks at
 * known times, and the API's request log says what was sent.
 *
 * Cases: a report at start, then one per change, and none while nothing
 * changes but the 10-minute refresh; a copy's progress alone at most every
 * 15 s; each event delivered once; events the control plane refuses
 * (their volume deleted meanwhile) dropped and the rest sent at once;
 * backoff while the API is away, with everything kept and sent once when
 * it is back; the loop ends through `onRejected` on a 401; the latencies a
 * report carries cover the time since the previous report, not the last
 * look.
 *
 * The control plane records an agent's events only about a volume the
 * node writes (functions/health/reported-events.ts), so those the tests
 * queue are about volumes attached to their node, as an agent's are.
 */
import { describe, expect, it } from "vitest";
import type { ApiClientError } from "../../agent/control/api-client.ts";
import { EventQueue } from "../../agent/control/event-queue.ts";
import { hostFacts } from "../../agent/control/facts.ts";
import { NodeClient, type ReportBody } from "../../agent/control/node-client.ts";
import { PROGRESS_EVERY_MS, REPORT_EVERY_MS, ReportLoop } from "../../agent/control/report-loop.ts";
import { AGENT_VERSION } from "../../agent/control/version.ts";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import { StatsWindow } from "../../agent/engine/stats-window.ts";
import { openVolume } from "../../agent/engine/volume.ts";
import type { Attachment } from "../../contract/attachment.ts";
import type { EventPage } from "../../contract/event.ts";
import type { Node, ReportAnswer, ReportedEvent, VolumeReport, VolumeStats } from "../../contract/node.ts";
import type { Volume } from "../../contract/volume.ts";
import { type LogRecord, recordingLog } from "./recording-log.ts";
import { type ServedControlPlane, servedForFile } from "./served-control-plane.ts";

const MiB = 1024 * 1024;
const ONLINE = "0123456789ab";
const COPYING = "ba9876543210";

let api: ServedControlPlane;
const loops = servedForFile({}, (started) => {
  api = started;
});

/** The real client; it only counts the reports it has been asked for and those still out. */
class CountingClient extends NodeClient {
  sent = 0;
  inFlight = 0;

  override report(body: ReportBody, signal?: AbortSignal): Promise<ReportAnswer> {
    this.sent++;
    this.inFlight++;
    return super.report(body, signal).finally(() => {
      this.inFlight--;
      api.changes.notify();
    });
  }
}

interface RunningReports {
  loop: ReportLoop;
  client: CountingClient;
  /** What volumes() returns, unless `source` was given. */
  volumes: VolumeReport[];
  generation: number | undefined;
  events: EventQueue;
  /** Times the loop looked (called volumes()). */
  looks: number;
  /** The loop's monotonic clock. */
  clock: number;
  answers: ReportAnswer[];
  delivered: VolumeReport[][];
  rejected: ApiClientError[];
  logs: LogRecord[];
}

async function startReports(
  node: string,
  opts: { volumes?: VolumeReport[]; source?: (withStats: boolean) => VolumeReport[] } = {},
): Promise<RunningReports> {
  const { credential } = await api.join(node);
  const { log, records } = recordingLog(api.changes);
  const r: RunningReports = {
    loop: undefined as never,
    client: new CountingClient({ apiUrl: api.apiUrl, node, credential }),
    volumes: opts.volumes ?? [],
    generation: undefined,
    events: new EventQueue(),
    looks: 0,
    clock: 0,
    answers: [],
    delivered: [],
    rejected: [],
    logs: records,
  };
  r.loop = new ReportLoop({
    client: r.client,
    agentVersion: AGENT_VERSION,
    facts: hostFacts(),
    volumes: (withStats) => {
      r.looks++;
      api.changes.notify();
      return opts.source?.(withStats) ?? r.volumes;
    },
    appliedGeneration: () => r.generation,
    delivered: (sent) => r.delivered.push(sent),
    events: r.events,
    onAnswer: (answer) => {
      r.answers.push(answer);
      api.changes.notify();
    },
    onRejected: (err) => {
      r.rejected.push(err);
      api.changes.notify();
    },
    log,
    monotonic: () => r.clock,
    // Backoff at its floor: 1 s, 2 s, 4 s, 8 s after the 1st, 2nd, 3rd, 4th failure.
    random: () => 0,
  });
  loops.push(r.loop);
  r.loop.start();
  await look(r);
  return r;
}

const until = (condition: () => boolean) => api.changes.until(condition);

/**
 * Make the loop look now, and again until a look sends nothing: then every
 * report sent before has been answered and handled.
 */
async function look(r: RunningReports): Promise<void> {
  for (;;) {
    const sent = r.client.sent;
    const seen = r.looks;
    r.loop.soon();
    await until(() => r.looks > seen);
    // A look that sends has called report() by now (synchronously after volumes()).
    await until(() => r.client.inFlight === 0);
    if (r.client.sent === sent) return;
  }
}

/** Report requests of `node` the API received, answered or cut. */
function reportsOf(node: string) {
  return api.requests.filter((x) => x.path === api.path(node, "report"));
}

function answered(node: string) {
  return reportsOf(node).filter((x) => x.status === 200);
}

function bodyOf(x: { body?: unknown }): ReportBody {
  return x.body as ReportBody;
}

function volume(extra: Partial<VolumeReport> = {}): VolumeReport {
  return { volume: "data", epoch: 3, state: "SERVING", replicas: [{ id: ONLINE, state: "ONLINE" }], ...extra };
}

function stats(writeOps: number): VolumeStats {
  return {
    readOps: 0,
    writeOps,
    bytesRead: 0,
    bytesWritten: writeOps * 4096,
    errors: 0,
    throttlePauses: 0,
    queueDepth: 0,
    readLatencyMs: { p50: 0, p99: 0 },
    writeLatencyMs: { p50: 1, p99: 2 },
  };
}

/** A volume attached to a node: what that node's agent writes, and may report events about. */
interface Written {
  volume: string;
  epoch: number;
  pool: string;
  replica: string;
}

let poolRegistered = false;

/** Volume `name` (one replica, on pool p1) created and attached to `node`, as the arbiter does. */
async function written(name: string, node: string): Promise<Written> {
  if (!poolRegistered) {
    const auth = { kind: "connectionString", connectionString: api.azurite.connectionString };
    await api.admin("POST", "/pools", { name: "p1", auth });
    poolRegistered = true;
  }
  const v = await api.admin<Volume>("POST", "/volumes", { name, sizeBytes: MiB });
  const { epoch } = await api.admin<Attachment>("POST", `/volumes/${name}/attach`, { node });
  return { volume: name, epoch, pool: "p1", replica: v.status.replicas[0]!.id };
}

function storageFailure(i: number, w: Written): ReportedEvent {
  return {
    type: "storage-failure",
    volume: w.volume,
    pool: w.pool,
    message: `write failed (${i})`,
    data: { epoch: w.epoch, replica: w.replica },
  };
}

async function eventsOf(node: string): Promise<string[]> {
  const page = await api.admin<EventPage>("GET", `/events?node=${node}&type=storage-failure&limit=500`);
  return page.items.map((e) => e.message).sort();
}

describe("ReportLoop: when it reports", () => {
  it("reports at start, then once per change; counters alone wait for the 10-minute refresh", async () => {
    const node = "vm-changes";
    const r = await startReports(node);
    expect(answered(node)).toHaveLength(1);
    expect(bodyOf(answered(node)[0]!)).toMatchObject({
      agentVersion: AGENT_VERSION,
      facts: hostFacts(),
      volumes: [],
      events: [],
    });
    await look(r);
    await look(r);
    expect(reportsOf(node)).toHaveLength(1);

    const serving = volume();
    r.volumes = [serving];
    await look(r);
    expect(reportsOf(node)).toHaveLength(2);
    expect(bodyOf(reportsOf(node)[1]!)).not.toHaveProperty("facts");
    expect(bodyOf(reportsOf(node)[1]!).volumes).toEqual([serving]);
    expect((await api.admin<Node>("GET", `/nodes/${node}`)).volumes).toEqual([serving]);
    await look(r);
    expect(reportsOf(node)).toHaveLength(2);

    // The generation applied is a change, and goes at once.
    r.generation = 4;
    await look(r);
    expect(reportsOf(node)).toHaveLength(3);
    expect(bodyOf(reportsOf(node)[2]!)).toMatchObject({ appliedGeneration: 4 });

    // Counters move all the time: alone, they are not a change.
    r.volumes = [{ ...serving, stats: stats(7) }];
    await look(r);
    r.clock += REPORT_EVERY_MS - 1;
    await look(r);
    expect(reportsOf(node)).toHaveLength(3);
    r.clock += 1;
    await look(r);
    expect(reportsOf(node)).toHaveLength(4);
    expect(bodyOf(reportsOf(node)[3]!).volumes).toEqual([{ ...serving, stats: stats(7) }]);

    expect(r.logs.filter((x) => x.msg === "report recorded").map((x) => x.volumes)).toEqual([
      [],
      ["data:3:SERVING"],
      ["data:3:SERVING"],
      ["data:3:SERVING"],
    ]);
    expect(r.answers).toEqual([0, 0, 0, 0].map((desiredGeneration) => ({ desiredGeneration })));
    expect(r.delivered).toEqual([[], [serving], [serving], [{ ...serving, stats: stats(7) }]]);
  });

  it("reports a copy's progress alone at most every 15 s, and the end of the copy at once", async () => {
    const node = "vm-progress";
    const copying = (progress: number): VolumeReport =>
      volume({
        replicas: [
          { id: ONLINE, state: "ONLINE" },
          { id: COPYING, state: "REBUILDING", progress, copiedBytes: progress * MiB, totalBytes: 100 * MiB },
        ],
      });
    const r = await startReports(node, { volumes: [copying(10)] });
    expect(answered(node)).toHaveLength(1);

    r.volumes = [copying(20)];
    await look(r);
    r.clock += PROGRESS_EVERY_MS - 1;
    await look(r);
    expect(reportsOf(node)).toHaveLength(1);
    r.clock += 1;
    await look(r);
    expect(reportsOf(node)).toHaveLength(2);
    expect(bodyOf(reportsOf(node)[1]!).volumes).toEqual([copying(20)]);

    r.volumes = [copying(30)];
    await look(r);
    expect(reportsOf(node)).toHaveLength(2);
    // The copy ends: the replica's state changes, which is reported at once.
    const done = volume({ replicas: [{ id: ONLINE, state: "ONLINE" }, { id: COPYING, state: "ONLINE" }] });
    r.volumes = [done];
    await look(r);
    expect(reportsOf(node)).toHaveLength(3);
    expect(bodyOf(reportsOf(node)[2]!).volumes).toEqual([done]);
  });

  it("the latencies a report carries cover the requests since the previous report", async () => {
    // A look that sends nothing must not close the volume's statistics window
    // (agent/engine/stats-window.ts take()): the loop asks for them only when a report
    // goes. The volume below is a real engine volume; its report is built as
    // ServedVolume.report() builds it.
    const node = "vm-latency";
    let now = 0;
    const vol = await openVolume(new MemoryBackend({ size: 16 * MiB }), { latencyClock: () => now, sparse: false });
    const window = new StatsWindow(() => vol.metrics());
    let state: VolumeReport["state"] = "SERVING";
    const r = await startReports(node, {
      source: (withStats) => [
        { volume: "data", epoch: 1, state, replicas: [], ...(withStats ? { stats: window.take() } : {}) },
      ],
    });
    expect(answered(node)).toHaveLength(1);
    // Two writes of 2 ms each after that report, then a look that has nothing to send.
    for (let i = 0; i < 2; i++) {
      const w = vol.write(0, Buffer.alloc(4096, i));
      now += 2;
      await w;
    }
    await look(r);
    expect(reportsOf(node)).toHaveLength(1);
    state = "DEGRADED";
    await look(r);
    expect(reportsOf(node)).toHaveLength(2);
    const sent = bodyOf(reportsOf(node)[1]!).volumes![0]!.stats!;
    expect(sent.writeOps).toBe(2);
    // Both writes in (1.5, 2] ms, as stats-window.test.ts shows for one take after them.
    expect(sent.writeLatencyMs).toEqual({ p50: 1.75, p99: 1.995 });
  });
});

describe("ReportLoop: events", () => {
  it("delivers each event once: it leaves the queue with the report that carried it", async () => {
    const node = "vm-events";
    const r = await startReports(node);
    const w = await written("data-events", node);
    const messages = Array.from({ length: 25 }, (_, i) => storageFailure(i, w));
    for (const e of messages) r.events.push(e);
    await look(r);
    // One report carries at most 20 (MAX_REPORTED_EVENTS); the rest go with the next.
    expect(reportsOf(node).map((x) => bodyOf(x).events?.length)).toEqual([0, 20, 5]);
    expect(r.events.size).toBe(0);
    await look(r);
    expect(reportsOf(node)).toHaveLength(3);
    expect(await eventsOf(node)).toEqual(messages.map((e) => e.message).sort());
  });

  it("drops the events the control plane refuses, and sends the rest and the volumes at once", async () => {
    const node = "vm-refused";
    const r = await startReports(node);
    const kept = await written("data-kept", node);
    const gone = await written("data-gone", node);
    r.events.push(storageFailure(1, kept));
    r.events.push({ type: "volume-failed", volume: gone.volume, message: "failed", data: { epoch: gone.epoch } });
    r.events.push(storageFailure(2, kept));
    // Meanwhile the operator detaches and deletes the volume: no record says this node wrote it.
    await api.admin("POST", `/volumes/${gone.volume}/detach`, {});
    await api.admin("DELETE", `/volumes/${gone.volume}`);
    const serving = volume({ volume: kept.volume, epoch: kept.epoch });
    r.volumes = [serving];
    await look(r);
    // Refused once, naming the one event; then the rest at once, without waiting out a backoff.
    expect(reportsOf(node).map((x) => [x.status, bodyOf(x).events?.length])).toEqual([
      [200, 0],
      [422, 3],
      [200, 2],
    ]);
    expect((reportsOf(node)[1]!.answer as { error: { details: unknown } }).error.details).toEqual({
      refused: [{ index: 1, reason: `node ${node} did not write volume ${gone.volume} at epoch ${gone.epoch}` }],
    });
    expect(r.events.size).toBe(0);
    expect(await eventsOf(node)).toEqual([storageFailure(1, kept).message, storageFailure(2, kept).message]);
    expect((await api.admin<Node>("GET", `/nodes/${node}`)).volumes).toEqual([serving]);
    expect(r.logs.filter((x) => x.msg === "the control plane refused events; dropped them")).toEqual([
      expect.objectContaining({ events: [`volume-failed:${gone.volume}`] }),
    ]);
    expect(r.logs.filter((x) => x.msg === "report failed; volumes keep serving")).toEqual([]);
    // Nothing left to send: the next look sends nothing.
    await look(r);
    expect(reportsOf(node)).toHaveLength(3);
  });
});

describe("ReportLoop: the API away", () => {
  it("backs off while the API is away, keeps the change and the events, and sends them once when it is back", async () => {
    const node = "vm-away";
    const r = await startReports(node);
    const w = await written("data-away", node);
    api.cut();
    const serving = volume();
    r.volumes = [serving];
    r.events.push(storageFailure(1, w));
    const attempts = () => reportsOf(node).filter((x) => x.status === "cut");
    await look(r);
    expect(attempts()).toHaveLength(1);
    await look(r);
    expect(attempts()).toHaveLength(1);
    // Each try waits twice as long as the one before.
    for (const [n, delay] of [[1, 1_000], [2, 2_000], [3, 4_000]] as const) {
      r.clock += delay - 1;
      await look(r);
      expect(attempts()).toHaveLength(n);
      r.clock += 1;
      await look(r);
      expect(attempts()).toHaveLength(n + 1);
    }
    expect(attempts().every((x) => bodyOf(x).events?.length === 1)).toBe(true);
    expect(r.logs.filter((x) => x.msg === "report failed; volumes keep serving")).toHaveLength(1);
    expect(r.events.size).toBe(1);
    expect(r.delivered).toEqual([[]]);

    api.restore();
    r.clock += 8_000 - 1;
    await look(r);
    expect(answered(node)).toHaveLength(1);
    r.clock += 1;
    await look(r);
    expect(answered(node)).toHaveLength(2);
    expect(bodyOf(answered(node)[1]!)).toMatchObject({ volumes: [serving], events: [storageFailure(1, w)] });
    expect(r.logs.find((x) => x.msg === "control plane reached again")).toMatchObject({ after: 4 });
    expect(r.events.size).toBe(0);
    expect(r.delivered).toEqual([[], [serving]]);
    expect(await eventsOf(node)).toEqual([storageFailure(1, w).message]);
    await look(r);
    expect(reportsOf(node)).toHaveLength(6);
  });
});

describe("ReportLoop: a refused credential", () => {
  it("ends through onRejected when the control plane answers 401 (the node was removed)", async () => {
    const node = "vm-rejected";
    const r = await startReports(node);
    await api.admin("DELETE", `/nodes/${node}`);
    r.volumes = [volume()];
    r.loop.soon();
    await until(() => r.rejected.length === 1);
    expect(r.rejected[0]).toMatchObject({ status: 401 });
    // Saying why is agent.ts's, once for both loops (agent.test.ts): the loop logs no error.
    expect(r.logs.filter((x) => (x.level ?? 0) >= 50)).toEqual([]);
    // Ended: woken, it no longer looks. A woken loop looks within microtasks; one turn
    // of the event loop is past them.
    const looks = r.looks;
    r.loop.soon();
    await new Promise((done) => setImmediate(done));
    expect(r.looks).toBe(looks);
    await r.loop.stop();
  });
});
