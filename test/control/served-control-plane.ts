/**
 * The control plane's API on a real loopback port, over a real Azurite
 * (Table), for tests of the agent's loops: they reach it with a real
 * `NodeClient`, and beat to the liveness table in Azurite with the SAS it
 * hands out. What a test can do to it:
 *
 * - `cut()` takes the API away: every request from then on is recorded,
 *   then its connection destroyed without an answer, as a dead host or a
 *   broken link does; `restore()` brings it back. The liveness table, in Azurite,
 *   stays reachable, as it does in Azure when only the Functions app is
 *   down.
 * - `hold()` keeps the next matching answer once the app has built it (for
 *   a desired state: after the liveness row's ETag was read) until
 *   `release()`: a slow fetch, inside which a test places a beat or a ring.
 *
 * Admin calls (`admin()`) and `cp` (for `bumpDesiredGeneration`) act in
 * process, so they work while the port is cut. Every request and answer
 * wakes `changes`, on which tests wait instead of sleeping.
 *
 * The account, the registry, the app and its admin key are the in-process
 * fixture's (test/functions/fixture.ts `startControlPlane`), on the
 * system's clock: what this file adds is the port, its cuts and holds, the
 * request log, and a join through the API.
 *
 *   const api = await startServedControlPlane({ heartbeatIntervalMs: 100 });
 *   const { client } = await api.join("vm-1");
 *   const held = api.hold((r) => r.path === api.path("vm-1", "desired"));
 *   // ...
 *   held.release();
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import type { Hono } from "hono";
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import { NodeClient } from "../../agent/control/node-client.ts";
import type { IssuedToken } from "../../contract/token.ts";
import { API_PREFIX } from "../../functions/app.ts";
import type { ControlPlane } from "../../functions/control-plane.ts";
import type { Registry } from "../../functions/registry/tables.ts";
import type { Azurite } from "../harness/azurite.ts";
import { startControlPlane } from "../functions/fixture.ts";

/** One request the API received. Times are `performance.now()`, the agent loops' own clock. */
export interface ApiRequestRecord {
  method: string;
  /** The URL's path, e.g. `/api/v1/nodes/vm-1/desired`. */
  path: string;
  receivedAt: number;
  /** The JSON body of a request that has one. */
  body?: unknown;
  /** The HTTP status; `cut` when the connection was destroyed instead; undefined while in the app or held. */
  status?: number | "cut";
  /** The JSON answer, as the app built it. */
  answer?: unknown;
  /** When the app had built the answer (before any hold). */
  builtAt?: number;
  /** When the answer was handed to the connection (after any hold). */
  answeredAt?: number;
}

/** An answer held back once built. */
export interface Hold {
  /** Resolves with the request once its answer is built and held. */
  readonly built: Promise<ApiRequestRecord>;
  /** Let the answer go (also when it has not arrived yet: then it is not held at all). */
  release(): void;
}

/** Wake-ups for condition waits: `until()` checks its condition at every `notify()`. */
export class Changes {
  readonly #waiters = new Set<() => void>();

  notify(): void {
    for (const check of [...this.#waiters]) check();
  }

  /** Resolves once `condition()` holds (checked now and at every change). */
  until(condition: () => boolean): Promise<void> {
    return new Promise((done) => {
      const check = () => {
        if (!condition()) return;
        this.#waiters.delete(check);
        done();
      };
      this.#waiters.add(check);
      check();
    });
  }
}

export interface ServedControlPlane {
  readonly azurite: Azurite;
  readonly registry: Registry;
  /** The control plane the app runs on: for arbiter calls made in process. */
  readonly cp: ControlPlane;
  readonly app: Hono;
  /** e.g. `http://127.0.0.1:PORT/api/v1` */
  readonly apiUrl: string;
  /** Every request received, in order. */
  readonly requests: ApiRequestRecord[];
  /** Errors the app reported (each test may expect it empty). */
  readonly reported: unknown[];
  readonly changes: Changes;
  /** `/api/v1/nodes/<node>/<endpoint>`. */
  path(node: string, endpoint: "desired" | "report"): string;
  /** Join `node` through the API with a fresh join token: its credential, and a client holding it. */
  join(node: string): Promise<{ credential: string; client: NodeClient }>;
  /** An admin request, in process; resolves with the JSON answer, rejects unless 2xx. */
  admin<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  cut(): void;
  restore(): void;
  hold(match: (r: ApiRequestRecord) => boolean): Hold;
  close(): Promise<void>;
}

export interface ServedControlPlaneOptions {
  /** How often agents are told to beat. */
  heartbeatIntervalMs?: number;
}

export async function startServedControlPlane(
  options: ServedControlPlaneOptions = {},
): Promise<ServedControlPlane> {
  // The system's clock: the liveness SAS the app signs is checked by Azurite against it.
  const fx = await startControlPlane({
    now: () => new Date(),
    ...(options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
  });
  const { app } = fx;
  const changes = new Changes();
  const requests: ApiRequestRecord[] = [];
  const holds: Array<{
    match: (r: ApiRequestRecord) => boolean;
    /** Matched a request, or released before one came. */
    taken: boolean;
    held(record: ApiRequestRecord): void;
    released: Promise<void>;
    release(): void;
  }> = [];
  let cut = false;

  const appListener = getRequestListener(async (request) => {
    const record: ApiRequestRecord = {
      method: request.method,
      path: new URL(request.url).pathname,
      receivedAt: performance.now(),
    };
    if (request.method !== "GET") record.body = await request.clone().json().catch(() => undefined);
    requests.push(record);
    changes.notify();
    const res = await app.fetch(request);
    record.answer = await res.clone().json().catch(() => undefined);
    record.builtAt = performance.now();
    const held = holds.find((h) => !h.taken && h.match(record));
    if (held) {
      held.taken = true;
      held.held(record);
      changes.notify();
      await held.released;
    }
    record.status = res.status;
    record.answeredAt = performance.now();
    changes.notify();
    return res;
  });

  const server: Server = createServer((req, res: ServerResponse) => {
    if (!cut) {
      void appListener(req, res);
      return;
    }
    const record: ApiRequestRecord = {
      method: req.method ?? "",
      path: new URL(req.url ?? "/", "http://x").pathname,
      receivedAt: performance.now(),
      status: "cut",
    };
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (chunks.length > 0) record.body = JSON.parse(Buffer.concat(chunks).toString()) as unknown;
      requests.push(record);
      req.socket.destroy();
      changes.notify();
    });
  });
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  const { port } = server.address() as AddressInfo;
  const apiUrl = `http://127.0.0.1:${port}${API_PREFIX}`;

  async function admin<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fx.call(method, `${API_PREFIX}${path}`, body);
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  return {
    azurite: fx.azurite,
    registry: fx.registry,
    cp: fx.cp,
    app,
    apiUrl,
    requests,
    reported: fx.reported,
    changes,
    path: (node, endpoint) => `${API_PREFIX}/nodes/${node}/${endpoint}`,
    async join(node) {
      const { token } = await admin<IssuedToken>("POST", "/tokens", {});
      const { credential } = await new NodeClient({ apiUrl }).join(token, { name: node });
      return { credential, client: new NodeClient({ apiUrl, node, credential }) };
    },
    admin,
    cut() {
      // Open connections stay, so that each request is seen (and counted) before it is cut;
      // one the app is answering already is answered.
      cut = true;
    },
    restore() {
      cut = false;
    },
    hold(match) {
      let release = () => {};
      const released = new Promise<void>((done) => (release = done));
      let held: (record: ApiRequestRecord) => void = () => {};
      const built = new Promise<ApiRequestRecord>((done) => (held = done));
      const entry = {
        match,
        taken: false,
        held,
        released,
        release() {
          entry.taken = true;
          release();
        },
      };
      holds.push(entry);
      return { built, release: entry.release };
    },
    async close() {
      for (const h of holds) h.release();
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
      await fx.dispose();
    },
  };
}

/**
 * The hooks of a test file of the agent's loops: one served control plane,
 * started before the file's cases (and handed to `started`) and closed
 * after them. After each case, the loops the case pushed to the list this
 * returns are stopped (a loop's stop() aborts a request in flight, a held
 * one included), the API is restored, and the app must have reported no
 * error.
 */
export function servedForFile(
  options: ServedControlPlaneOptions,
  started: (api: ServedControlPlane) => void,
): Array<{ stop(): Promise<void> }> {
  let api: ServedControlPlane | undefined;
  const loops: Array<{ stop(): Promise<void> }> = [];
  beforeAll(async () => {
    api = await startServedControlPlane(options);
    started(api);
  });
  afterAll(async () => {
    await api?.close();
  });
  afterEach(async () => {
    await Promise.all(loops.splice(0).map((l) => l.stop()));
    api?.restore();
    expect(api?.reported).toEqual([]);
  });
  return loops;
}
