/**
 * SAS refresh end to end: the control plane signs replica SAS tokens with
 * `PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS`, and the agent (`pagedisk agent
 * run`, a child process) puts each fresh token into the running volume, so
 * I/O goes on after the first token has expired.
 *
 * Real parts only: Azurite, the control plane in process (telling agents to
 * beat every second), the built agent, NBD writes over its socket. The
 * pool is reached through the fault proxy's emulation of Azure's stored
 * access policies (`azurePolicies`), because an agent's SAS is bound to a
 * policy that grants permissions only (replica-container.ts), so its own
 * `st` and `se` are what bound it in time: Azure enforces them, but Azurite
 * takes a bound SAS's times from the policy alone and would accept it for
 * ever. (Every token this test sees is signed within the first 35 s of the
 * lease, on the control plane's clock, so none is bound yet and Azurite
 * checks its times itself: desired-state.ts.) A recording pass-through proxy between
 * agent and control plane shows which desired states (and so which tokens)
 * the agent received and when it asked again. A token is renewed when half
 * its time is left (liveness-loop.ts `renewIn`), so here, each token being
 * valid 10 s, the agent fetches about every 5 s, each time before the token
 * it holds has expired.
 *
 * Time: the shortest lifetime is 60 s. Instead of waiting a minute, the
 * control plane's clock runs 50 s behind, so each token it signs expires
 * 10 s of real time after it was signed; the test waits on the agent's own
 * fetches until the first token is past its end. Then, right after a
 * renewal, the clock is set 11 minutes back and the node rung, so that the
 * control plane at once hands out a token already expired: the very next
 * write fails while the token the agent held before is still valid, which
 * shows the agent writes with the newest token it was given.
 */
import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../../agent/control/api-client.ts";
import type { DesiredState } from "../../contract/node.ts";
import type { Volume } from "../../contract/volume.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { replicaSasLifetimeFrom, settingsFrom } from "../../functions/settings.ts";
import { replicaContainerName } from "../../functions/storage/replica-container.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";
import { ensureBundleBuilt } from "../infra/installer.ts";
import { bumpDesiredGeneration } from "../../functions/arbiter/desired-generation.ts";
import { ERR } from "../nbd/raw-client.ts";
import { type AgentProcess, nbdWrite, startAgent } from "./agent-process.ts";

const NODE = "vm-sas";
const VOLUME = "vol-sas";
const MiB = 1024 * 1024;
const LIFETIME_SECONDS = 60;
/** How long, in real time, each token signed while the clock runs behind stays valid. */
const REAL_VALIDITY_MS = 10_000;

describe("PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS", () => {
  const registry = { PAGEDISK_REGISTRY_CONNECTION_STRING: "UseDevelopmentStorage=true" };

  it("defaults to 15 minutes and takes whole seconds from 60 to 900", () => {
    expect(settingsFrom(registry).replicaSasLifetimeMs).toBe(900_000);
    expect(replicaSasLifetimeFrom({ PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS: "" })).toBe(900_000);
    expect(replicaSasLifetimeFrom({ PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS: "60" })).toBe(60_000);
    expect(
      settingsFrom({ ...registry, PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS: "900" }).replicaSasLifetimeMs,
    ).toBe(900_000);
  });

  it("refuses anything else at start, naming the setting and its bounds", () => {
    // 3600 was the longest once: a SAS left in a fenced node's hands that long is refused now.
    for (const bad of ["59", "901", "3600", "0", "-60", "90.5", "1h", "4000"]) {
      expect(() => settingsFrom({ ...registry, PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS: bad })).toThrow(
        /PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS must be (between 60 and 900 seconds|a whole number of seconds)/,
      );
    }
  });
});

/** One desired state the agent received through the proxy. */
interface Answer {
  receivedAt: number;
  state: DesiredState;
}

/** A pass-through HTTP proxy in front of the control plane that records desired-state answers. */
interface RecordingProxy {
  origin: string;
  answers: Answer[];
  /** Real times at which the agent asked for its desired state. */
  asked: number[];
  /** Resolves once `ready()` holds, checked after every request and answer. */
  until(ready: () => boolean): Promise<void>;
  close(): Promise<void>;
}

async function startRecordingProxy(target: string): Promise<RecordingProxy> {
  const answers: Answer[] = [];
  const asked: number[] = [];
  const changes = new EventEmitter();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const desired = req.method === "GET" && /\/nodes\/[^/]+\/desired/.test(req.url ?? "");
      if (desired) {
        asked.push(Date.now());
        changes.emit("change");
      }
      // The agent may abort a fetch (its timeout, its stop); the upstream request goes with it.
      const abort = new AbortController();
      res.on("close", () => abort.abort());
      const headers: Record<string, string> = {};
      for (const name of ["authorization", "content-type", "accept"]) {
        const value = req.headers[name];
        if (typeof value === "string") headers[name] = value;
      }
      void (async () => {
        try {
          const upstream = await fetch(`${target}${req.url}`, {
            method: req.method,
            headers,
            ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
            signal: abort.signal,
          });
          const body = Buffer.from(await upstream.arrayBuffer());
          if (desired && upstream.status === 200) {
            answers.push({ receivedAt: Date.now(), state: JSON.parse(body.toString()) as DesiredState });
            changes.emit("change");
          }
          res.writeHead(upstream.status, {
            "content-type": upstream.headers.get("content-type") ?? "application/json",
          });
          res.end(body);
        } catch {
          res.destroy();
        }
      })();
    });
  });
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    answers,
    asked,
    until(ready) {
      return new Promise((done) => {
        const check = () => {
          if (!ready()) return;
          changes.off("change", check);
          done();
        };
        changes.on("change", check);
        check();
      });
    },
    close: () =>
      new Promise((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

let azurite: Azurite;
/** In front of Azurite's blobs: the pool as Azure would answer a SAS bound to a policy. */
let storage: FaultProxy;
let cp: LocalControlPlane;
let proxy: RecordingProxy;
let api: ApiClient;
let dir: string;
let agent: AgentProcess | undefined;
let volume: Volume;
/** How far the control plane's clock is from real time. */
let clockOffsetMs = -(LIFETIME_SECONDS * 1000 - REAL_VALIDITY_MS);

beforeAll(async () => {
  await ensureBundleBuilt();
  dir = await mkdtemp(join(tmpdir(), "pagedisk-sas-"));
  azurite = await startAzurite({ table: true, inMemory: true });
  storage = await startFaultProxy(azurite.blobEndpoint, {
    azurePolicies: { propagationMs: 30_000, accountKey: azurite.accountKey },
  });
  const env = {
    PAGEDISK_REPLICA_SAS_LIFETIME_SECONDS: String(LIFETIME_SECONDS),
    PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "1",
  };
  cp = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env,
    port: 0,
    stateDir: join(dir, "cp"),
    now: () => new Date(Date.now() + clockOffsetMs),
    log: () => {},
  });
  proxy = await startRecordingProxy(new URL(cp.apiUrl).origin);
  api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
  await api.createPool({
    name: "p1",
    container: "p1-disks",
    auth: {
      kind: "connectionString",
      connectionString: azurite.connectionString.replace(
        /BlobEndpoint=[^;]+/,
        `BlobEndpoint=${storage.blobEndpoint}`,
      ),
    },
  });
  volume = await api.createVolume({ name: VOLUME, sizeBytes: MiB, replicas: 1 });
  const { token } = await api.createToken();
  agent = await startAgent(
    [
      "--control-plane",
      proxy.origin,
      "--state-dir",
      join(dir, "agent"),
      "--name",
      NODE,
      "--kernel",
      "none",
    ],
    { PAGEDISK_JOIN_TOKEN: token },
  );
});

afterAll(async () => {
  await agent?.stop("SIGKILL");
  await proxy?.close();
  await cp?.close();
  await storage?.close();
  await azurite?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The replica's blob, read straight from Azurite with the account key. */
function blob() {
  const r = volume.status.replicas[0]!;
  return BlobServiceClient.fromConnectionString(azurite.connectionString)
    .getContainerClient(replicaContainerName("p1-disks", r.id))
    .getPageBlobClient(`${VOLUME}/${r.id}`);
}

/** One FUA write through the agent's export; resolves with the NBD error (0 = ok). */
function write(offset: number, data: Buffer): Promise<number> {
  return nbdWrite(join(dir, "agent", "sockets", `${VOLUME}.sock`), VOLUME, offset, data);
}

/** The replica URL and its expiry in one answer that carries the volume. */
function sasOf(answer: Answer): { url: string; expiresAt: number; startsAt: number } {
  const attachment = answer.state.attachments.find((a) => a.volume === VOLUME)!;
  const url = attachment.replicas[0]!.url!;
  const query = new URL(url).searchParams;
  expect(Date.parse(query.get("se")!)).toBe(Date.parse(attachment.sasExpiresAt));
  return { url, expiresAt: Date.parse(attachment.sasExpiresAt), startsAt: Date.parse(query.get("st")!) };
}

const carriesVolume = (a: Answer) => a.state.attachments.some((x) => x.volume === VOLUME);

/** Resolves once the agent says it has applied `answer`: the pass that handed on its tokens is over. */
async function applied(answer: Answer): Promise<void> {
  const expiry = answer.state.attachments.find((x) => x.volume === VOLUME)!.sasExpiresAt;
  await agent!.waitForLog(
    (r) => r.msg === "desired state applied" && Array.isArray(r.sasExpiresAt) && r.sasExpiresAt.includes(expiry),
  );
}

/** Properties of the replica blob read with exactly the SAS in `url`: the HTTP status. */
async function statusWith(url: string): Promise<number> {
  return (await fetch(url, { method: "HEAD" })).status;
}

describe("SAS refresh", () => {
  it("signs for the configured lifetime; the agent renews on every fetch and keeps writing after its first token expired", async () => {
    const a = agent!;
    const from = a.logs.length;
    await api.attachVolume(VOLUME, NODE);
    await a.waitForLog((r) => r.msg === "volume serving" && r.volume === VOLUME, from);
    const first = proxy.answers.find(carriesVolume)!;
    const sas1 = sasOf(first);
    // Signed within the first 35 s of the volume's lease, while Azure may not apply the lease's
    // policy yet: not bound to it, read and write of its own (desired-state.ts).
    expect(new URL(sas1.url).searchParams.get("si")).toBeNull();
    expect(new URL(sas1.url).searchParams.get("sp")).toBe("rw");
    expect(new URL(sas1.url).origin).toBe(storage.origin);
    // Signed as valid from 5 minutes before the control plane's now (clock skew) for 60 s after it.
    expect(sas1.expiresAt - (sas1.startsAt + 5 * 60_000)).toBeGreaterThan(LIFETIME_SECONDS * 1000 - 1000);
    expect(sas1.expiresAt - (sas1.startsAt + 5 * 60_000)).toBeLessThanOrEqual(LIFETIME_SECONDS * 1000);
    expect(await statusWith(sas1.url)).toBe(200);

    const before = Buffer.alloc(4096, 0x11);
    expect(await write(0, before)).toBe(0);

    // Each token is renewed when half its time is left: wait on the renewals until the
    // first token is a second past its end, and the agent has applied a newer one.
    await proxy.until(() => proxy.answers.some((x) => carriesVolume(x) && x.receivedAt > sas1.expiresAt + 1000));
    const later = proxy.answers.filter((x) => carriesVolume(x) && x.receivedAt > sas1.expiresAt + 1000)[0]!;
    await applied(later);
    const renewals = proxy.answers.filter(carriesVolume);
    expect(new Set(renewals.map((x) => sasOf(x).url)).size).toBeGreaterThan(2);
    // Each came before the token it replaced had expired.
    renewals.slice(1).forEach((x, i) => {
      expect(x.receivedAt).toBeLessThan(sasOf(renewals[i]!).expiresAt);
    });
    expect(sasOf(later).expiresAt).toBeGreaterThan(Date.now());

    // The first token is refused now, as Azure refuses an expired SAS...
    expect(await statusWith(sas1.url)).toBe(403);
    // ...and the agent still writes: with a token it was given later.
    const after = Buffer.alloc(4096, 0x22);
    expect(await write(4096, after)).toBe(0);
    expect(await blob().downloadToBuffer(0, 8192)).toEqual(Buffer.concat([before, after]));
    expect(a.logs.some((r) => r.msg === "volume failed")).toBe(false);
  });

  it("a token the control plane hands out is the one the next write carries, even while the old one is still valid", async () => {
    const a = agent!;
    // Right after a renewal, the token the agent holds has most of its time ahead.
    const since = Date.now();
    await proxy.until(() => proxy.answers.some((x) => x.receivedAt > since && carriesVolume(x)));
    const held = proxy.answers.filter(carriesVolume).at(-1)!;
    // From now on the control plane signs tokens that ended 10 minutes ago; a ring makes the
    // agent fetch at its next beat rather than when half the held token's time is left.
    const jumpedAt = Date.now();
    clockOffsetMs = -(LIFETIME_SECONDS * 1000 + 11 * 60_000);
    await bumpDesiredGeneration(cp.runtime.cp, NODE, "replicas");
    await proxy.until(() =>
      proxy.answers.some((x) => x.receivedAt > jumpedAt && carriesVolume(x) && sasOf(x).expiresAt < x.receivedAt),
    );
    const expired = proxy.answers.find(
      (x) => x.receivedAt > jumpedAt && carriesVolume(x) && sasOf(x).expiresAt < x.receivedAt,
    )!;
    await applied(expired);
    expect(await statusWith(sasOf(expired).url)).toBe(403);

    const from = a.logs.length;
    expect(await write(8192, Buffer.alloc(4096, 0x33))).toBe(ERR.EIO);
    // The token held before the jump would still have been accepted when that write went
    // out: the storage accepts it even now, after the write.
    expect(await statusWith(sasOf(held).url)).toBe(200);
    await a.waitForLog((r) => r.msg === "volume failed" && r.volume === VOLUME && r.code === "Forbidden", from);
    expect(await blob().downloadToBuffer(8192, 4096)).toEqual(Buffer.alloc(4096));
    expect(await a.stop("SIGTERM")).toBe(0);
  });
});
