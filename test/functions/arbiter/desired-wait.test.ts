/**
 * The wait behind `GET .../desired?after=`, over Azurite, each way it can
 * end: woken at once by a bump this process made (the re-read is set far
 * beyond the test's timeout, so only the wake-up can answer), found by the
 * re-read when another instance made the bump (its registry object, and so
 * its wake-ups, are not this one's), at its deadline, or by the client
 * going away; and every way lets go of its subscription.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IssuedToken } from "../../../contract/token.ts";
import { attachVolume } from "../../../functions/arbiter/attach.ts";
import { desiredChanges } from "../../../functions/arbiter/desired-changes.ts";
import { awaitDesiredChange } from "../../../functions/arbiter/desired-wait.ts";
import { detachVolume } from "../../../functions/arbiter/detach.ts";
import { type ControlPlane, controlPlane } from "../../../functions/control-plane.ts";
import { generationOf, type NodeRecord, nodes } from "../../../functions/registry/nodes.ts";
import type { Read } from "../../../functions/registry/rows.ts";
import { openRegistry, type Registry } from "../../../functions/registry/tables.ts";
import { agentNodes } from "../agents.ts";
import { type ControlPlaneFixture, jsonOf, startControlPlane } from "../fixture.ts";

/** Longer than the test timeout: a wait that needs it never ends in time. */
const NEVER_MS = 600_000;

let fx: ControlPlaneFixture;
let token: IssuedToken;
/** The same registry, opened again: what another Functions instance would hold. */
let elsewhere: Registry;
const reported: unknown[] = [];
const { join } = agentNodes(
  () => fx,
  () => token.token,
);

const over = (registry: Registry): ControlPlane =>
  controlPlane({ registry, report: (err) => reported.push(err) });

async function nodeRead(name: string): Promise<Read<NodeRecord>> {
  return (await nodes(fx.registry).get(name))!;
}

beforeAll(async () => {
  fx = await startControlPlane();
  await fx.addPool("p1");
  token = await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201);
  for (const volume of ["v-1", "v-2"]) {
    const res = await fx.call("POST", "/api/v1/volumes", { name: volume, sizeBytes: 64 * 1024 });
    expect(res.status).toBe(201);
  }
  await join("vm-1");
  elsewhere = await openRegistry(fx.connectionString);
});
afterAll(() => fx?.dispose());

describe("awaitDesiredChange", () => {
  it("is woken at once by a bump in this process, and unsubscribes", async () => {
    const read = await nodeRead("vm-1");
    const before = generationOf(read.value);
    const waiting = awaitDesiredChange(over(fx.registry), read, {
      after: before,
      waitMs: NEVER_MS,
      recheckMs: NEVER_MS,
      signal: new AbortController().signal,
    });
    expect(desiredChanges(fx.registry).waiting("vm-1")).toBe(1);
    // Another control plane object over the same registry: the app and the sweeper of one host.
    await attachVolume(over(fx.registry), "v-1", "vm-1");
    expect(generationOf(await waiting)).toBe(before + 1);
    expect(desiredChanges(fx.registry).waiting("vm-1")).toBe(0);
  });

  it("finds a bump made by another instance by re-reading the node", async () => {
    const read = await nodeRead("vm-1");
    const before = generationOf(read.value);
    const waiting = awaitDesiredChange(over(elsewhere), read, {
      after: before,
      waitMs: NEVER_MS,
      recheckMs: 20,
      signal: new AbortController().signal,
    });
    expect(desiredChanges(elsewhere).waiting("vm-1")).toBe(1);
    await detachVolume(over(fx.registry), "v-1");
    expect(generationOf(await waiting)).toBe(before + 1);
    expect(desiredChanges(elsewhere).waiting("vm-1")).toBe(0);
    // Wake-ups stay within their registry object.
    expect(desiredChanges(fx.registry)).not.toBe(desiredChanges(elsewhere));
  });

  it("notices a bump made between the caller's read and its subscription", async () => {
    const stale = await nodeRead("vm-1");
    await attachVolume(over(elsewhere), "v-2", "vm-1");
    const node = await awaitDesiredChange(over(fx.registry), stale, {
      after: generationOf(stale.value),
      waitMs: NEVER_MS,
      recheckMs: NEVER_MS,
      signal: new AbortController().signal,
    });
    expect(generationOf(node)).toBe(generationOf(stale.value) + 1);
  });

  it("ends at its deadline with the generation unchanged", async () => {
    const read = await nodeRead("vm-1");
    const node = await awaitDesiredChange(over(fx.registry), read, {
      after: generationOf(read.value),
      waitMs: 10,
      recheckMs: NEVER_MS,
      signal: new AbortController().signal,
    });
    expect(generationOf(node)).toBe(generationOf(read.value));
    expect(desiredChanges(fx.registry).waiting("vm-1")).toBe(0);
  });

  it("ends when the client goes away, letting go of its subscription", async () => {
    const read = await nodeRead("vm-1");
    const client = new AbortController();
    const waiting = awaitDesiredChange(over(fx.registry), read, {
      after: generationOf(read.value),
      waitMs: NEVER_MS,
      recheckMs: NEVER_MS,
      signal: client.signal,
    });
    expect(desiredChanges(fx.registry).waiting("vm-1")).toBe(1);
    client.abort();
    expect(generationOf(await waiting)).toBe(generationOf(read.value));
    expect(desiredChanges(fx.registry).waiting("vm-1")).toBe(0);
  });

  it("answers at once without `after`, with wait 0, or when the generation already differs", async () => {
    const read = await nodeRead("vm-1");
    const g = generationOf(read.value);
    const signal = new AbortController().signal;
    for (const wait of [
      { after: undefined, waitMs: NEVER_MS },
      { after: g, waitMs: 0 },
      { after: g + 1, waitMs: NEVER_MS },
    ]) {
      const node = await awaitDesiredChange(over(fx.registry), read, { ...wait, signal });
      expect(node).toBe(read.value);
    }
    expect(reported).toEqual([]);
  });
});
