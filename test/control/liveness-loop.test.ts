/**
 * LivenessLoop against the real control plane. The liveness rows live in
 * Azurite's Table service, so every answer to a beat is the service's own:
 * 204 with an ETag that is the write's time, 412 on a stale If-Match, 404
 * on a missing row. The API runs on a real port (served-control-plane.ts),
 * reached with a real NodeClient; the beat is the real `beat`, wrapped only
 * to record what was sent and what came of it. Rings are the arbiter's own
 * (`bumpDesiredGeneration`). Agents are told to beat every 100 ms, and
 * every wait is on a recorded beat, request, answer or log record.
 *
 * One case per rule of the loop's header: a ring is heard at the next beat
 * and fetched once; a beat landing during a fetch is not taken for a ring;
 * a ring landing during a fetch is fetched again; while the API is away
 * beats land and fetches back off; a removed node is told so through
 * `onRejected`; a saved target lets a restarted loop beat at once; beats
 * keep landing while a fetch is slow after a ring; a refresh() asked during
 * a fetch is not dropped.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ApiClientError } from "../../agent/control/api-client.ts";
import { beat, type BeatOutcome, etagTime } from "../../agent/control/liveness-beat.ts";
import { LivenessLoop, type LivenessLoopOptions } from "../../agent/control/liveness-loop.ts";
import type { NodeClient } from "../../agent/control/node-client.ts";
import { livenessFilePath, readLivenessTarget, saveLivenessTarget } from "../../agent/control/node-file.ts";
import type { DesiredState, LivenessTarget } from "../../contract/node.ts";
import { bumpDesiredGeneration } from "../../functions/arbiter/desired-generation.ts";
import { deleteLivenessRow, readLivenessRow } from "../../functions/registry/liveness.ts";
import { generationOf, nodes } from "../../functions/registry/nodes.ts";
import { type LogRecord, recordingLog } from "./recording-log.ts";
import { type ServedControlPlane, startServedControlPlane } from "./served-control-plane.ts";

const INTERVAL_MS = 100;

let api: ServedControlPlane;
beforeAll(async () => {
  api = await startServedControlPlane({ heartbeatIntervalMs: INTERVAL_MS });
});
afterAll(async () => {
  await api?.close();
});

const loops: LivenessLoop[] = [];
afterEach(async () => {
  // stop() aborts a fetch in flight, a held one included.
  await Promise.all(loops.splice(0).map((l) => l.stop()));
  api.restore();
  expect(api.reported).toEqual([]);
});

/** One beat as the loop sent it, and what came of it. Times are performance.now(), the loop's clock. */
interface SentBeat {
  ifMatch: string;
  startedAt: number;
  endedAt: number;
  outcome: BeatOutcome;
}

interface RunningLoop {
  loop: LivenessLoop;
  beats: SentBeat[];
  /** Desired states handed to apply(), in order: one per fetch that succeeded. */
  applied: DesiredState[];
  rejected: ApiClientError[];
  logs: LogRecord[];
}

function startLoop(client: NodeClient, extra: Partial<LivenessLoopOptions> = {}): RunningLoop {
  const run: RunningLoop = { loop: undefined as never, beats: [], applied: [], rejected: [], logs: [] };
  const { log, records } = recordingLog(api.changes);
  run.logs = records;
  run.loop = new LivenessLoop({
    client,
    apply: async (desired) => {
      run.applied.push(desired);
      api.changes.notify();
    },
    onRejected: (err) => {
      run.rejected.push(err);
      api.changes.notify();
    },
    log,
    // Backoff at its floor: attempts after 1 s, then 2 s, then 4 s.
    random: () => 0,
    async send(url, ifMatch, body) {
      const startedAt = performance.now();
      const outcome = await beat(url, ifMatch, body);
      run.beats.push({ ifMatch, startedAt, endedAt: performance.now(), outcome });
      api.changes.notify();
      return outcome;
    },
    ...extra,
  });
  loops.push(run.loop);
  run.loop.start();
  return run;
}

const until = (condition: () => boolean) => api.changes.until(condition);

/** Beats that landed, of those sent after `after`. */
function landed(beats: SentBeat[], after = Number.NEGATIVE_INFINITY): SentBeat[] {
  return beats.filter((b) => b.startedAt > after && b.outcome.kind === "landed");
}

function etagOf(b: SentBeat): string {
  if (b.outcome.kind !== "landed") throw new Error(`beat did not land: ${b.outcome.kind}`);
  return b.outcome.etag;
}

/** Desired-state requests of `node` the API received, answered or not. */
function fetchesOf(node: string) {
  return api.requests.filter((r) => r.path === api.path(node, "desired"));
}

function answeredFetches(node: string) {
  return fetchesOf(node).filter((r) => r.status === 200);
}

function cutFetches(node: string) {
  return fetchesOf(node).filter((r) => r.status === "cut");
}

/** A node joined and its loop running: its first desired state applied, two beats landed. */
async function steadyLoop(node: string): Promise<RunningLoop> {
  const run = startLoop((await api.join(node)).client);
  await until(() => run.applied.length === 1 && landed(run.beats).length >= 2);
  return run;
}

/** Hold `node`'s next desired-state answer once built, and make the loop fetch now. */
function holdNextFetch(run: RunningLoop, node: string) {
  const held = api.hold((r) => r.path === api.path(node, "desired"));
  run.loop.refresh();
  return held;
}

/**
 * The node's generation moves, and its ring is lost: bumpDesiredGeneration
 * reports a ring that fails and goes on (the operation before it stands).
 */
async function bumpWithoutRing(node: string): Promise<number> {
  const table = nodes(api.registry);
  const read = (await table.get(node))!;
  const next = generationOf(read.value) + 1;
  await table.replace({ ...read.value, desiredGeneration: next }, read.etag);
  return next;
}

describe("LivenessLoop: rings", () => {
  it("hears a ring at the next beat, stays alive with one If-Match: * beat, and fetches once", async () => {
    const node = "vm-ring";
    const run = await steadyLoop(node);
    expect(await bumpDesiredGeneration(api.cp, node, "attached")).toBe(1);
    const rang = performance.now();
    await until(() => run.applied.some((d) => d.generation === 1));
    const fetchedAt = answeredFetches(node).at(-1)!.answeredAt!;
    await until(() => landed(run.beats, fetchedAt).length >= 5);

    const rung = run.beats.filter((b) => b.outcome.kind === "rung");
    expect(rung).toHaveLength(1);
    const heard = rung[0]!;
    // The first beat sent after the ring hears it (no beat lands on the old ETag in between),
    // and it leaves within one interval (plus timer slack on a busy machine).
    expect(run.beats.filter((b) => b.startedAt > rang && b.startedAt < heard.startedAt)).toEqual([]);
    expect(heard.startedAt - rang).toBeLessThan(3 * INTERVAL_MS);
    // At once, one unconditional beat, which lands; only then the one fetch.
    const next = run.beats[run.beats.indexOf(heard) + 1]!;
    expect(next).toMatchObject({ ifMatch: "*", outcome: { kind: "landed" } });
    expect(fetchesOf(node)).toHaveLength(2);
    expect(fetchesOf(node)[1]!.receivedAt).toBeGreaterThan(next.endedAt);
    // From then on each beat is conditional on the ETag of the one before, and lands.
    const after = run.beats.slice(run.beats.indexOf(next) + 1);
    after.forEach((b, i) => {
      expect(b.ifMatch).toBe(etagOf(i === 0 ? next : after[i - 1]!));
      expect(b.outcome.kind).toBe("landed");
    });
    expect(run.applied.map((d) => d.generation)).toEqual([0, 1]);
    expect(run.logs.filter((r) => r.msg === "heartbeats land")).toHaveLength(1);
  });

  it("a beat that lands while a fetch is in flight is not taken for a ring afterwards", async () => {
    const node = "vm-beat-in-fetch";
    const run = await steadyLoop(node);
    const held = holdNextFetch(run, node);
    const fetch = await held.built;
    const fetched = (fetch.answer as DesiredState).liveness.etag;
    // The API read the row's ETag before building the answer; two beats land on the row after.
    await until(() => landed(run.beats, fetch.builtAt).length >= 2);
    const meanwhile = landed(run.beats, fetch.builtAt).at(-1)!;
    held.release();
    await until(() => run.applied.length === 2);
    await until(() => landed(run.beats, fetch.answeredAt).length >= 5);

    expect(etagTime(fetched)).toBeLessThan(etagTime(etagOf(meanwhile))!);
    // The agent kept its own, newer ETag: not one 412, and no fetch but the two.
    const first = run.beats.find((b) => b.startedAt > fetch.answeredAt!)!;
    expect(first.ifMatch).not.toBe(fetched);
    expect(run.beats.filter((b) => b.outcome.kind !== "landed")).toEqual([]);
    expect(fetchesOf(node)).toHaveLength(2);
  });

  it("a ring that lands while a fetch is in flight, after the API read the ETag, is fetched again", async () => {
    const node = "vm-ring-in-fetch";
    const run = await steadyLoop(node);
    const held = holdNextFetch(run, node);
    const fetch = await held.built;
    expect((fetch.answer as DesiredState).generation).toBe(0);
    expect(await bumpDesiredGeneration(api.cp, node, "attached")).toBe(1);
    // A beat hears the ring while the fetch, which cannot know of it, is still out.
    await until(() => run.beats.some((b) => b.endedAt > fetch.builtAt! && b.outcome.kind === "rung"));
    held.release();
    await until(() => run.applied.some((d) => d.generation === 1));
    const fetchedAt = answeredFetches(node).at(-1)!.answeredAt!;
    await until(() => landed(run.beats, fetchedAt).length >= 5);

    expect(run.applied.map((d) => d.generation)).toEqual([0, 0, 1]);
    expect(fetchesOf(node)).toHaveLength(3);
  });

  it("a ring that lands while a fetch is in flight is fetched again also when no beat heard it before the fetch ended", async () => {
    const node = "vm-ring-in-short-fetch";
    const run = await steadyLoop(node);
    const held = holdNextFetch(run, node);
    await held.built;
    expect(await bumpDesiredGeneration(api.cp, node, "attached")).toBe(1);
    held.release();
    await until(() => run.applied.some((d) => d.generation === 1));
    expect(run.applied.map((d) => d.generation)).toEqual([0, 0, 1]);
  });

  it("keeps landing beats while a fetch is slow after a ring", async () => {
    // While a fetch is out (a cold start, an API that hangs until the client's 15 s
    // timeout), a beat that hears a ring must still land with `If-Match: *`: else the
    // row keeps the ring's `beatAt`, and the sweeper finds an alive node silent and
    // fences it. The `*` is safe: the 412 before it counts the ring, so the fetch in
    // flight does not clear the need to fetch, and another one follows.
    const node = "vm-slow-fetch";
    const run = await steadyLoop(node);
    const held = holdNextFetch(run, node);
    try {
      const fetch = await held.built;
      await bumpDesiredGeneration(api.cp, node, "attached");
      await until(() => run.beats.some((b) => b.endedAt > fetch.builtAt! && b.outcome.kind === "rung"));
      const heard = run.beats.findIndex((b) => b.endedAt > fetch.builtAt! && b.outcome.kind === "rung");
      await until(() => run.beats.length >= heard + 5);
      const since = run.beats.slice(heard + 1);
      expect(
        since.map((b) => `${b.ifMatch === "*" ? "*" : "etag"} ${b.outcome.kind}`),
        "beats after the ring, while the fetch is still out",
      ).toContain("* landed");
      expect(landed(since).length).toBeGreaterThanOrEqual(since.length - 1);
    } finally {
      held.release();
    }
  });

  it("refresh() asked while a fetch is in flight fetches again after it", async () => {
    // agent.ts calls refresh() when a report's answer shows a desired generation newer
    // than the one applied: how the agent learns of a bump whose ring failed. A fetch
    // already in flight read the node before the bump: it must not clear the need.
    const node = "vm-refresh-in-fetch";
    const run = await steadyLoop(node);
    const held = holdNextFetch(run, node);
    const fetch = await held.built;
    expect((fetch.answer as DesiredState).generation).toBe(0);
    expect(await bumpWithoutRing(node)).toBe(1);
    run.loop.refresh();
    held.release();
    await until(() => run.applied.length === 2);
    // Ten beats later: a refresh is due "at the next beat".
    await until(() => landed(run.beats, fetch.answeredAt).length >= 10);
    expect(run.applied.map((d) => d.generation)).toEqual([0, 0, 1]);
  });
});

describe("LivenessLoop: the API away", () => {
  it("beats land every interval while fetches back off; the pending fetch happens when the API is back", async () => {
    const node = "vm-api-away";
    const run = await steadyLoop(node);
    api.cut();
    const cutAt = performance.now();
    // A change to fetch: the ring reaches the agent through the liveness table, which is up.
    expect(await bumpDesiredGeneration(api.cp, node, "fenced")).toBe(1);
    await until(
      () =>
        cutFetches(node).length >= 3 &&
        run.logs.filter((r) => r.msg === "cannot fetch the desired state").length >= 3,
    );
    const [first, second, third] = cutFetches(node).map((r) => r.receivedAt) as [number, number, number];
    // Jitter at 0: the second attempt 1 s after the first failed, the third 2 s after the second.
    expect(second - first).toBeGreaterThanOrEqual(1_000);
    expect(third - second).toBeGreaterThanOrEqual(2_000);
    expect(
      run.logs.filter((r) => r.msg === "cannot fetch the desired state").map((r) => r.failures),
    ).toEqual([1, 2, 3]);
    // Meanwhile every beat landed but the one that heard the ring, about one an interval.
    const during = run.beats.filter((b) => b.startedAt > cutAt && b.startedAt < third);
    expect(during.filter((b) => b.outcome.kind !== "landed").map((b) => b.outcome.kind)).toEqual(["rung"]);
    expect(landed(during).length).toBeGreaterThanOrEqual(Math.floor((third - cutAt) / INTERVAL_MS / 2));
    expect(run.loop.connected).toBe(true);
    expect(run.applied.map((d) => d.generation)).toEqual([0]);

    api.restore();
    await until(() => run.applied.some((d) => d.generation === 1));
    expect(answeredFetches(node)).toHaveLength(2);
    expect(run.logs.filter((r) => r.msg === "heartbeats land")).toHaveLength(1);
  });
});

describe("LivenessLoop: the row gone", () => {
  it("a removed node's beat finds its row gone; the fetch that follows is refused: onRejected, and the loop ends", async () => {
    // Another node's beats go on: the clock this case waits on instead of sleeping.
    const witness = await steadyLoop("vm-witness");
    const node = "vm-removed";
    const run = await steadyLoop(node);
    await api.admin("DELETE", `/nodes/${node}`);
    const removedAt = performance.now();
    await until(() => run.rejected.length === 1);
    expect(run.rejected[0]).toMatchObject({ status: 401 });
    const after = run.beats.filter((b) => b.startedAt > removedAt);
    expect(after.length).toBeGreaterThan(0);
    expect(after.map((b) => b.outcome.kind)).toEqual(after.map(() => "gone"));
    expect(fetchesOf(node).at(-1)).toMatchObject({ status: 401 });
    expect(run.logs.some((r) => String(r.msg).includes("refused this node's credential"))).toBe(true);

    const rejectedAt = performance.now();
    const sent = run.beats.filter((b) => b.startedAt <= rejectedAt).length;
    await until(() => landed(witness.beats, rejectedAt).length >= 5);
    expect(run.beats).toHaveLength(sent);
    expect(fetchesOf(node).filter((r) => r.receivedAt > rejectedAt)).toEqual([]);
    expect(run.loop.connected).toBe(false);
  });

  it("a beat that finds the row of a registered node gone fetches; the control plane makes the row again and beats land on it", async () => {
    const node = "vm-row-lost";
    const run = await steadyLoop(node);
    const key = (await nodes(api.registry).get(node))!.value.livenessKey!;
    await deleteLivenessRow(api.registry.liveness, key);
    const deletedAt = performance.now();
    await until(() => run.applied.length === 2);
    const fetchedAt = answeredFetches(node).at(-1)!.answeredAt!;
    await until(() => landed(run.beats, fetchedAt).length >= 3);

    const missed = run.beats.filter((b) => b.startedAt > deletedAt && b.outcome.kind !== "landed");
    expect(missed.length).toBeGreaterThan(0);
    expect(missed.map((b) => b.outcome.kind)).toEqual(missed.map(() => "gone"));
    expect(run.rejected).toEqual([]);
    expect((await readLivenessRow(api.registry.liveness, key))?.by).toBe("agent");
  });
});

describe("LivenessLoop: a restart", () => {
  it("beats on the saved target before its first fetch succeeds; without one, it has nowhere to beat", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pagedisk-liveness-"));
    try {
      const { client } = await api.join("vm-restart");
      const { client: unsavedClient } = await api.join("vm-unsaved");
      const saved: LivenessTarget[] = [];
      const saveTarget = async (target: LivenessTarget) => {
        await saveLivenessTarget(dir, target);
        saved.push(target);
        api.changes.notify();
      };
      const first = startLoop(client, { saveTarget });
      await until(() => saved.length === 1 && landed(first.beats).length >= 2);
      expect((await stat(livenessFilePath(dir))).mode & 0o777).toBe(0o600);
      await first.loop.stop();

      api.cut();
      const target = await readLivenessTarget(dir);
      expect(target).toEqual(saved[0]);
      const second = startLoop(client, { target, saveTarget });
      const unsaved = startLoop(unsavedClient);
      await until(
        () =>
          landed(second.beats).length >= 3 &&
          cutFetches("vm-restart").length >= 1 &&
          cutFetches("vm-unsaved").length >= 2,
      );
      // The saved ETag is the first fetch's, and the first loop beat since: 412, then one
      // unconditional beat, then beats conditional on the ETag of the one before.
      expect(second.beats[0]).toMatchObject({ ifMatch: target!.etag, outcome: { kind: "rung" } });
      expect(second.beats[1]).toMatchObject({ ifMatch: "*", outcome: { kind: "landed" } });
      second.beats.slice(2).forEach((b, i) => {
        expect(b).toMatchObject({ ifMatch: etagOf(second.beats[i + 1]!), outcome: { kind: "landed" } });
      });
      expect(second.applied).toEqual([]);
      expect(second.loop.connected).toBe(true);
      expect(second.loop.lastHeartbeatAt).not.toBeNull();
      expect(unsaved.beats).toEqual([]);
      expect(unsaved.loop.connected).toBe(false);

      api.restore();
      await until(
        () => second.applied.length === 1 && unsaved.applied.length === 1 && landed(unsaved.beats).length >= 1,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
