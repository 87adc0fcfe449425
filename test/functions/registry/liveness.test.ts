/**
 * The liveness table over Azurite, as agents and the control plane use it:
 * a beat lands conditional on the ETag the desired state gave; a ring makes
 * the next conditional beat fail and nothing else; a node's credential
 * reaches its own row only (it can neither read nor list the table, nor
 * touch or make a row whose key it does not hold, nor reach any other
 * table); a removed
 * node's beats land nowhere; a lapsed policy refuses every beat until the
 * sweeper rolls it forward.
 */
import { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { beat } from "../../../agent/control/liveness-beat.ts";
import type { IssuedToken } from "../../../contract/token.ts";
import { bumpDesiredGeneration } from "../../../functions/arbiter/desired-generation.ts";
import { controlPlane } from "../../../functions/control-plane.ts";
import {
  ensureAgentPolicy,
  lastBeatOf,
  LIVE_ROW,
  readLivenessRow,
  scanLiveness,
} from "../../../functions/registry/liveness.ts";
import { nodes } from "../../../functions/registry/nodes.ts";
import { agentNodes } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

let fx: ControlPlaneFixture;
let token: IssuedToken;
const agents = agentNodes(
  () => fx,
  () => token.token,
);
const at = () => ({ at: new Date().toISOString() });

beforeAll(async () => {
  fx = await startControlPlane({ now: () => new Date() });
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  for (const name of ["vm-a", "vm-b"]) await agents.join(name);
});
afterAll(() => fx?.dispose());

async function keyOf(name: string): Promise<string> {
  return (await nodes(fx.registry).get(name))!.value.livenessKey!;
}

/** A request with `vm-b`'s SAS on another path of the same account. */
async function withSasOf(url: string, path: string, init: RequestInit = {}): Promise<number> {
  const own = new URL(url);
  const target = new URL(`${own.origin}${own.pathname.replace(/\/[^/]+$/, "")}/${path}${own.search}`);
  const res = await fetch(target, {
    ...init,
    headers: { accept: "application/json;odata=nometadata", "x-ms-version": "2019-02-02", ...init.headers },
  });
  await res.body?.cancel();
  return res.status;
}

describe("heartbeats and rings", () => {
  it("lands a beat conditional on the desired state's ETag, then on its own", async () => {
    const { liveness } = await agents.desired("vm-a");
    expect(liveness.intervalMs).toBe(2_000);
    const first = await beat(liveness.url, liveness.etag, at());
    expect(first.kind).toBe("landed");
    const second = await beat(liveness.url, (first as { etag: string }).etag, at());
    expect(second.kind).toBe("landed");
    const row = await readLivenessRow(fx.registry.liveness, await keyOf("vm-a"));
    expect(row).toMatchObject({ by: "agent", etag: (second as { etag: string }).etag });
  });

  it("answers the next conditional beat 412 after a generation bump rings the row", async () => {
    const { liveness } = await agents.desired("vm-a");
    // A beat that claims a time long past: it counts from when the service stored it.
    const landed = await beat(liveness.url, liveness.etag, { at: new Date(Date.now() - 600_000).toISOString() });
    expect(landed.kind).toBe("landed");
    const beaten = (await readLivenessRow(fx.registry.liveness, await keyOf("vm-a")))!;
    expect(beaten).toMatchObject({ by: "agent", etag: (landed as { etag: string }).etag });
    // The control plane's clock runs a minute ahead: a ring stamped with it would show.
    const cp = controlPlane({
      registry: fx.registry,
      now: () => new Date(Date.now() + 60_000),
      report: (e) => { throw e; },
    });
    expect(await bumpDesiredGeneration(cp, "vm-a", "attached")).toBe(1);
    expect(await beat(liveness.url, (landed as { etag: string }).etag, at())).toEqual({ kind: "rung" });
    // The ring kept the time of the beat it covered: the service's stamp of that beat.
    const row = (await readLivenessRow(fx.registry.liveness, await keyOf("vm-a")))!;
    expect(row.by).toBe("ring");
    expect(row.beatAt).toBe(lastBeatOf(beaten, Date.now()));
    // The fetch that follows hands out an ETag the next beat lands on.
    const fresh = await agents.desired("vm-a");
    expect(fresh.generation).toBe(1);
    expect((await beat(fresh.liveness.url, fresh.liveness.etag, at())).kind).toBe("landed");
  });
});

describe("one node's credential reaches its own row only", () => {
  it("cannot read its own row, list the table, delete, or read another's row even by its key", async () => {
    const b = (await agents.desired("vm-b")).liveness.url;
    const aKey = await keyOf("vm-a");
    const bKey = await keyOf("vm-b");
    expect(await withSasOf(b, `liveness(PartitionKey='${bKey}',RowKey='${LIVE_ROW}')`)).toBe(403);
    expect(await withSasOf(b, `liveness(PartitionKey='${aKey}',RowKey='${LIVE_ROW}')`)).toBe(403);
    expect(await withSasOf(b, "liveness()")).toBe(403);
    expect(
      await withSasOf(b, `liveness(PartitionKey='${bKey}',RowKey='${LIVE_ROW}')`, {
        method: "DELETE",
        headers: { "if-match": "*" },
      }),
    ).toBe(403);
  });

  it("cannot reach any other table of the account: nodes, volumes, the sweeper's state", async () => {
    const b = (await agents.desired("vm-b")).liveness.url;
    for (const table of ["nodes", "volumes", "credentials", "control"]) {
      expect(await withSasOf(b, `${table}()`), table).toBe(403);
      expect(
        await withSasOf(b, `${table}(PartitionKey='vm-a',RowKey='node')`, {
          method: "MERGE",
          headers: { "if-match": "*", "content-type": "application/json" },
          body: "{}",
        }),
        table,
      ).toBe(403);
    }
  });

  it("leaves another node's row untouched, and makes no row, whatever key it guesses", async () => {
    const before = await scanLiveness(fx.registry.liveness);
    const aBefore = (await readLivenessRow(fx.registry.liveness, await keyOf("vm-a")))!;
    const b = (await agents.desired("vm-b")).liveness.url;
    const bKey = await keyOf("vm-b");
    for (const guess of ["vm-a", "node", aBefore.key.slice(0, 31), aBefore.key.toUpperCase()]) {
      // Azure refuses a key outside the SAS's range (403); Azurite, which does not enforce the
      // range, finds no such row (404): a beat (If-Match) never creates one.
      const outcome = await beat(b.replace(bKey, guess), "*", at());
      expect(["gone", "refused"], guess).toContain(outcome.kind);
    }
    const aAfter = (await readLivenessRow(fx.registry.liveness, aBefore.key))!;
    expect(aAfter.etag).toBe(aBefore.etag);
    // No row came or went, and none changed.
    const after = await scanLiveness(fx.registry.liveness);
    expect(after.map((r) => [r.key, r.etag])).toEqual(before.map((r) => [r.key, r.etag]));
  });

  it("cannot fetch another node's desired state", async () => {
    const res = await fx.app.request("/api/v1/nodes/vm-a/desired", {
      headers: { authorization: `Bearer ${agents.credential("vm-b")}` },
    });
    expect(res.status).toBe(403);
  });
});

describe("revocation", () => {
  it("lands nothing once the node is removed: its row is gone and its SAS cannot make one", async () => {
    await agents.join("vm-gone");
    const { liveness } = await agents.desired("vm-gone");
    const key = await keyOf("vm-gone");
    expect((await beat(liveness.url, liveness.etag, at())).kind).toBe("landed");
    expect((await fx.call("DELETE", "/api/v1/nodes/vm-gone")).status).toBe(204);
    expect(await beat(liveness.url, liveness.etag, at())).toEqual({ kind: "gone" });
    expect(await readLivenessRow(fx.registry.liveness, key)).toBeUndefined();
  });

  it("refuses every beat once the agents' policy lapses, and lands again once it is rolled", async () => {
    const { liveness } = await agents.desired("vm-a");
    const client = fx.registry.liveness.client;
    const [policy] = await client.getAccessPolicy();
    await client.setAccessPolicy([
      { id: policy!.id, accessPolicy: { ...policy!.accessPolicy, expiry: new Date(Date.now() - 60_000) } },
    ]);
    expect(await beat(liveness.url, "*", at())).toMatchObject({ kind: "refused", status: 403 });
    await ensureAgentPolicy(fx.registry.liveness, Date.now());
    expect((await beat(liveness.url, "*", at())).kind).toBe("landed");
  });

  it("keeps the table's only policy update-only", async () => {
    const client = TableClient.fromConnectionString(fx.connectionString, "liveness", {
      allowInsecureConnection: true,
    });
    const policies = [...(await client.getAccessPolicy())];
    expect(policies.map((p) => [p.id, p.accessPolicy?.permission])).toEqual([["agents", "u"]]);
  });
});
