/**
 * LivenessLoop against the real control plane. The liveness rows live in
 * Azurite's Table service, so every answer to a beat is the service's own:
 * 204 with an ETag that is the write's time, 412 on a stale If-Match, 404
 * on a missing row. The API runs on a real port (served-control-plane.ts),
 * reached with a real NodeClient (a subclass that only counts the fetches
 * the loop starts); the beat is the real `beat`, wrapped only to record
 * what was sent and what came of it, and to drop beats (as a network blip
 * would) when a case asks. Rings are the arbiter's own (`bumpDesiredGeneration`). Agents are
 * told to beat every 100 ms, and every wait is on a recorded beat,
 * request, answer or log record.
 *
 * The loop's monotonic clock is the test's, moved by hand: the fetches'
 * backoff runs on it, so a case moves it past a backoff instead of waiting
 * one out. Each round of the loop sends one beat conditional on an ETag,
 * then decides whether to fetch, then pauses: once a round has begun, the
 * decision of the one before has been made. A case that shows nothing was
 * fetched waits for rounds, not for time.
 *
 * One case per rule of the loop's header: a ring is heard at the next beat
 * and fetched once; a beat landing during a fetch is not taken for a ring;
 * a ring landing during a fetch is fetched again; while the API is away
 * beats land and fetches back off; a removed node is told so through
 * `onRejected`; a saved target lets a restarted loop beat at once; beats
 * keep landing while a fetch is slow after a ring; a refresh() asked during
 * a fetch is not dropped, and one for a generation already fetched fetches
 * nothing. And when the SAS tokens are renewed.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { ApiClientError } from "../../agent/control/api-client.ts";
import { beat, type BeatOutcome } from "../../agent/control/liveness-beat.ts";
import { LivenessLoop, type LivenessLoopOptions, renewIn } from "../../agent/control/liveness-loop.ts";
import { type DesiredQuery, NodeClient } from "../../agent/control/node-client.ts";
import { livenessFilePath, readLivenessTarget, saveLivenessTarget } from "../../agent/control/node-file.ts";
import type { DesiredState, LivenessTarget } from "../../contract/node.ts";
import { timeOfTableEtag } from "../../contract/table-etag.ts";
import { bumpDesiredGeneration } from "../../functions/arbiter/desired-generation.ts";
import type { ControlPlane } from "../../functions/control-plane.ts";
import { deleteLivenessRow, readLivenessRow } from "../../functions/registry/liveness.ts";
import { generationOf, nodes } from "../../functions/registry/nodes.ts";
import { type LogRecord, recordingLog } from "./recording-log.ts";
import { type ServedControlPlane, servedForFile } from "./served-control-plane.ts";

const INTERVAL_MS = 100;

let api: ServedControlPlane;
const loops = servedForFile({ heartbeatIntervalMs: INTERVAL_MS }, (started) => {
  api = started;
});

/** The real client; it only counts the fetches asked of it, when they are asked. */
class CountingClient extends NodeClient {
  fetches = 0;

  override desired(query?: DesiredQuery): Promise<DesiredState> {
    this.fetches++;
    api.changes.notify();
    return super.desired(query);
  }
}

/** One beat as the loop sent it, and what came of it. Times are performance.now(), for order only. */
interface SentBeat {
  ifMatch: string;
  startedAt: number;
  endedAt: number;
  outcome: BeatOutcome;
}

/** Something a case holds back until it lets it go. */
interface Gate {
  readonly closed: Promise<void>;
  open(): void;
}

interface RunningLoop {
  loop: LivenessLoop;
  client: CountingClient;
  /** Beats that came back, in order. */
  beats: SentBeat[];
  /** Rounds begun: beats sent conditional on an ETag (a round sends one, and a `*` only after a 412). */
  rounds: number;
  /** While set, beats fail at once without reaching the table (and are not in `beats`). */
  dropBeats: boolean;
  dropped: number;
  /** While set, passes applied wait for it to open. */
  applyGate: Gate | undefined;
  /** Desired states handed to apply(), in order: one per fetch that succeeded. */
  applied: DesiredState[];
  rejected: ApiClientError[];
  logs: LogRecord[];
  /** The loop's monotonic clock. */
  clock: number;
}

async function joined(node: string): Promise<CountingClient> {
  const { credential } = await api.join(node);
  return new CountingClient({ apiUrl: api.apiUrl, node, credential });
}

function startLoop(client: CountingClient, extra: Partial<LivenessLoopOptions> = {}): RunningLoop {
  const run: RunningLoop = {
    loop: undefined as never,
    client,
    beats: [],
    rounds: 0,
    dropBeats: false,
    dropped: 0,
    applyGate: undefined,
    applied: [],
    rejected: [],
    logs: [],
    clock: 0,
  };
  const { log, records } = recordingLog(api.changes);
  run.logs = records;
  run.loop = new LivenessLoop({
    client,
    apply: async (desired) => {
      run.applied.push(desired);
      api.changes.notify();
      await run.applyGate?.closed;
    },
    onRejected: (err) => {
      run.rejected.push(err);
      api.changes.notify();
    },
    log,
    monotonic: () => run.clock,
    // Backoff at its floor: attempts 1 s, then 2 s, then 4 s after a failure, on `clock`.
    random: () => 0,
    async send(url, ifMatch, body) {
      if (ifMatch !== "*") run.rounds++;
      if (run.dropBeats) run.dropped++;
      api.changes.notify();
      if (run.dropBeats) return { kind: "failed", reason: "dropped by the test" };
      const startedAt = performance.now();
      const outcome = await beat(url, ifMatch, body);
      run.beats.push({ ifMatch, startedAt, endedAt: performance.now(), outcome });
      api.changes.notify();
      return outcome;
    },
    ...extra,
  });
  loops.push({
    async stop() {
      // A case that failed with a pass held must not hang the loop's stop().
      run.applyGate?.open();
      await run.loop.stop();
    },
  });
  run.loop.start();
  return run;
}

const until = (condition: () => boolean) => api.changes.until(condition);

/** Resolves once `n` more rounds have begun: with n = 2, the loop has decided at least once on the clock as it is now. */
async function rounds(run: RunningLoop, n: number): Promise<void> {
  const from = run.rounds;
  await until(() => run.rounds >= from + n);
}

/**
 * Let what the last observed record set in motion settle (a failed fetch's
 * clean-up, in microtasks): one turn of the event loop is past it.
 */
const settle = () => new Promise<void>((done) => setImmediate(done));

/** Hold the passes applied from now on, until the gate opens. */
function holdApplies(run: RunningLoop): Gate {
  let open = () => {};
  const closed = new Promise<void>((done) => (open = done));
  const held: Gate = {
    closed,
    open() {
      run.applyGate = undefined;
      open();
    },
  };
  run.applyGate = held;
  return held;
}

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

function fetchFailures(run: RunningLoop) {
  return run.logs.filter((r) => r.msg === "cannot fetch the desired state");
}

/** A node joined and its loop running: its first desired state applied, two beats landed. */
async function steadyLoop(node: string): Promise<RunningLoop> {
  const run = startLoop(await joined(node));
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
 * The node's generation moves, and its ring is lost: the control plane
 * dies between the bump and the ring (its crash-injection hook throws
 * there). The bump stands; the new generation is returned.
 */
async function bumpWithoutRing(node: string): Promise<number> {
  const crash = new Error("the control plane died before the ring");
  const dying: ControlPlane = {
    ...api.cp,
    faults: {
      beforeStep(step) {
        if (step.startsWith("ring ")) throw crash;
      },
    },
  };
  await expect(bumpDesiredGeneration(dying, node, "replicas")).rejects.toBe(crash);
  return generationOf((await nodes(api.registry).get(node))!.value);
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
    // The first beat sent after the ring hears it: no beat lands on the old ETag in between.
    expect(run.beats.filter((b) => b.startedAt > rang && b.startedAt < heard.startedAt)).toEqual([]);
    // At once, one unconditional beat, which lands; only then the one fetch.
    const next = run.beats[run.beats.indexOf(heard) + 1]!;
    expect(next).toMatchObject({ ifMatch: "*", outcome: { kind: "landed" } });
    expect(fetchesOf(node)).toHaveLength(2);
    expect(run.client.fetches).toBe(2);
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

    expect(timeOfTableEtag(fetched)).toBeLessThan(timeOfTableEtag(etagOf(meanwhile))!);
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
    const fetch = await held.built;
    expect((fetch.answer as DesiredState).generation).toBe(0);
    // From here until the fetch has ended no beat reaches the table: none can hear the
    // ring first. Once one has been dropped, none is in flight.
    run.dropBeats = true;
    const dropped = run.dropped;
    await until(() => run.dropped > dropped);
    const sent = run.beats.length;
    expect(await bumpDesiredGeneration(api.cp, node, "attached")).toBe(1);
    held.release();
    await until(() => run.applied.length === 2);
    run.dropBeats = false;
    expect(run.beats).toHaveLength(sent);
    expect(run.beats.filter((b) => b.outcome.kind !== "landed")).toEqual([]);

    await until(() => run.applied.some((d) => d.generation === 1));
    expect(run.applied.map((d) => d.generation)).toEqual([0, 0, 1]);
    // The first beat sent after the fetch, on the ETag the loop kept from it, heard the ring.
    expect(run.beats[sent]).toMatchObject({ outcome: { kind: "rung" } });
    expect(run.beats[sent + 1]).toMatchObject({ ifMatch: "*", outcome: { kind: "landed" } });
    expect(fetchesOf(node)).toHaveLength(3);
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

  it("refresh(generation) asked while a fetch is in flight fetches again after it, unless the fetch brought that generation", async () => {
    // agent.ts calls refresh(generation) with the generation a report's answer names:
    // how the agent learns of a bump whose ring was lost. A fetch already in flight
    // that read the node before the bump must not clear the need; one that read it
    // after the bump is all that is needed.
    const node = "vm-refresh-in-fetch";
    const run = await steadyLoop(node);
    const held = holdNextFetch(run, node);
    const fetch = await held.built;
    expect((fetch.answer as DesiredState).generation).toBe(0);
    expect(await bumpWithoutRing(node)).toBe(1);
    run.loop.refresh(1);
    held.release();
    await until(() => run.applied.length === 3);
    expect(run.applied.map((d) => d.generation)).toEqual([0, 0, 1]);

    expect(await bumpWithoutRing(node)).toBe(2);
    const second = holdNextFetch(run, node);
    expect(((await second.built).answer as DesiredState).generation).toBe(2);
    run.loop.refresh(2);
    second.release();
    await until(() => run.applied.length === 4);
    await rounds(run, 2);
    expect(run.applied.map((d) => d.generation)).toEqual([0, 0, 1, 2]);
    expect(run.client.fetches).toBe(4);
    expect(fetchesOf(node)).toHaveLength(4);
  });

  it("refresh(generation) for a generation already fetched fetches nothing, also while its pass is still being applied", async () => {
    // A report sent while a pass is applied is answered with the generation being
    // applied, newer than the one the report carries as applied: agent.ts hands it to
    // refresh(), which must not fetch it again (a billed execution per change, not two).
    const node = "vm-refresh-fetched";
    const run = await steadyLoop(node);
    run.loop.refresh(0);
    await rounds(run, 2);
    expect(run.client.fetches).toBe(1);

    const applies = holdApplies(run);
    expect(await bumpDesiredGeneration(api.cp, node, "attached")).toBe(1);
    await until(() => run.applied.length === 2);
    // The pass over generation 1 has begun, and is held.
    expect(run.applied[1]!.generation).toBe(1);
    run.loop.refresh(1);
    await rounds(run, 2);
    expect(run.client.fetches).toBe(2);
    applies.open();

    // A generation it has not fetched (its ring lost) is fetched, once.
    expect(await bumpWithoutRing(node)).toBe(2);
    run.loop.refresh(2);
    await until(() => run.applied.length === 3);
    run.loop.refresh(2);
    await rounds(run, 2);
    expect(run.applied.map((d) => d.generation)).toEqual([0, 1, 2]);
    expect(run.client.fetches).toBe(3);
    expect(fetchesOf(node)).toHaveLength(3);
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
    await until(() => fetchFailures(run).length === 1);
    // Jitter at 0: the second attempt 1 s (of the loop's clock) after the first failed,
    // the third 2 s after the second, the fourth 4 s after the third; not one sooner.
    for (const [failed, delay] of [[1, 1_000], [2, 2_000]] as const) {
      run.clock += delay - 1;
      await rounds(run, 2);
      expect(run.client.fetches).toBe(1 + failed);
      run.clock += 1;
      await until(() => fetchFailures(run).length === failed + 1);
      expect(run.client.fetches).toBe(2 + failed);
    }
    run.clock += 4_000 - 1;
    await rounds(run, 2);
    expect(run.client.fetches).toBe(4);
    expect(fetchFailures(run).map((r) => r.failures)).toEqual([1, 2, 3]);
    const attempts = cutFetches(node).map((r) => r.receivedAt);
    expect(attempts).toHaveLength(3);
    // Meanwhile every beat landed but the one that heard the ring, and beats went on
    // between the attempts.
    const during = run.beats.filter((b) => b.startedAt > cutAt);
    expect(during.filter((b) => b.outcome.kind !== "landed").map((b) => b.outcome.kind)).toEqual(["rung"]);
    for (let i = 1; i < attempts.length; i++) {
      expect(landed(during, attempts[i - 1]).filter((b) => b.endedAt < attempts[i]!).length).toBeGreaterThanOrEqual(2);
    }
    expect(run.loop.connected).toBe(true);
    expect(run.applied.map((d) => d.generation)).toEqual([0]);

    api.restore();
    run.clock += 1;
    await until(() => run.applied.some((d) => d.generation === 1));
    expect(answeredFetches(node)).toHaveLength(2);
    expect(run.client.fetches).toBe(5);
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
    // Saying why is agent.ts's, once for both loops (agent.test.ts): the loop logs no error.
    expect(run.logs.filter((r) => (r.level ?? 0) >= 50)).toEqual([]);

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
      const client = await joined("vm-restart");
      const unsavedClient = await joined("vm-unsaved");
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
        () => landed(second.beats).length >= 3 && fetchFailures(second).length === 1 && fetchFailures(unsaved).length === 1,
      );
      // Without a target a loop rounds every 2 s (its interval before the first fetch):
      // refresh() wakes it, its fetch being due anyway, once its clock is past the backoff.
      await settle();
      unsaved.clock += 1_000;
      unsaved.loop.refresh();
      await until(() => fetchFailures(unsaved).length === 2);
      expect(cutFetches("vm-restart")).toHaveLength(1);
      expect(cutFetches("vm-unsaved")).toHaveLength(2);
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
      await settle();
      second.clock += 1_000;
      unsaved.clock += 2_000;
      unsaved.loop.refresh();
      await until(
        () => second.applied.length === 1 && unsaved.applied.length === 1 && landed(unsaved.beats).length >= 1,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("LivenessLoop: SAS renewal", () => {
  const now = Date.UTC(2026, 0, 1);
  const expiring = (...inMs: number[]) => inMs.map((ms) => ({ sasExpiresAt: new Date(now + ms).toISOString() }));
  const MIN = 60_000;

  it("renews when half the first token's time is left (a token lives 1 to 15 minutes)", () => {
    expect(renewIn(expiring(15 * MIN), now)).toBe(7.5 * MIN);
    expect(renewIn(expiring(15 * MIN, 10 * MIN), now)).toBe(5 * MIN);
    expect(renewIn(expiring(MIN), now)).toBe(30_000);
    expect(renewIn(expiring(10_000, MIN), now)).toBe(5_000);
  });

  it("renews at once a token already expired; without tokens, never for them", () => {
    expect(renewIn(expiring(-10_000), now)).toBe(0);
    expect(renewIn([], now)).toBe(Number.POSITIVE_INFINITY);
  });
});
