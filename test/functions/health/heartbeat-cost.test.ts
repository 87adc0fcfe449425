/**
 * What a heartbeat costs in Table transactions, counted where the service
 * sees them: every request from the control plane to Azurite's Table
 * endpoint goes through a counting proxy. Target (issue 3): at most 2 in
 * the common case, which is a heartbeat without events.
 */

import type { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JoinResponse } from "../../../contract/node.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { createApp } from "../../../functions/app.ts";
import { issueAdminKey } from "../../../functions/registry/admin-keys.ts";
import { openRegistry } from "../../../functions/registry/tables.ts";
import { type Azurite, startAzurite } from "../../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../../harness/fault-proxy.ts";

let azurite: Azurite;
let proxy: FaultProxy;
let app: Hono;
let credential: string;
const reported: unknown[] = [];

beforeAll(async () => {
  azurite = await startAzurite({ table: true, inMemory: true });
  proxy = await startFaultProxy(azurite.tableEndpoint!);
  // The same account, with its Table endpoint behind the proxy.
  const viaProxy = azurite.connectionString.replace(
    /TableEndpoint=[^;]+/,
    `TableEndpoint=${proxy.blobEndpoint}`,
  );
  const registry = await openRegistry(viaProxy);
  app = createApp({ registry, report: (err) => reported.push(err) });
  const { key } = await issueAdminKey(registry, new Date());
  const admin = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const token = (await (
    await app.request("/api/v1/tokens", { method: "POST", headers: admin, body: "{}" })
  ).json()) as IssuedToken;
  const joined = (await (
    await app.request("/api/v1/nodes/join", {
      method: "POST",
      headers: { authorization: `Bearer ${token.token}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "vm-1" }),
    })
  ).json()) as JoinResponse;
  credential = joined.credential;
});
afterAll(async () => {
  await proxy?.close();
  await azurite?.dispose();
});

/** Table requests made while sending one heartbeat. */
async function transactionsFor(body: unknown): Promise<number> {
  proxy.resetCounts();
  const res = await app.request("/api/v1/nodes/vm-1/heartbeat", {
    method: "POST",
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(200);
  return proxy.received();
}

const volumes = Array.from({ length: 16 }, (_, i) => ({
  volume: `v-${i}`,
  epoch: i + 1,
  state: "SERVING",
}));

describe("Table transactions per heartbeat", () => {
  it("is 2 for a heartbeat with volume reports and no events (the common case)", async () => {
    expect(await transactionsFor({ agentVersion: "1.0.0", volumes })).toBe(2);
    expect(await transactionsFor({ volumes: [] })).toBe(2);
  });

  it("is 3 with events, however many: they go in one batch", async () => {
    const event = (i: number) => ({ type: "throttled", volume: "v-1", message: `pause ${i}` });
    expect(await transactionsFor({ volumes, events: [event(1)] })).toBe(3);
    expect(
      await transactionsFor({ volumes, events: Array.from({ length: 20 }, (_, i) => event(i)) }),
    ).toBe(3);
  });

  it("is 1 for a refused heartbeat, which writes nothing", async () => {
    proxy.resetCounts();
    const res = await app.request("/api/v1/nodes/vm-1/heartbeat", {
      method: "POST",
      headers: {
        authorization: `Bearer ${credential.slice(0, -1)}${credential.endsWith("A") ? "B" : "A"}`,
        "content-type": "application/json",
      },
      body: "{}",
    });
    expect(res.status).toBe(401);
    expect(proxy.received()).toBe(1);
    expect(reported).toEqual([]);
  });
});
