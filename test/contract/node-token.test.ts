import { describe, expect, it } from "vitest";
import { NodeReport, JoinRequest } from "../../contract/node.ts";
import { TokenCreate } from "../../contract/token.ts";

describe("node contract", () => {
  it("an empty report means no volumes and no events", () => {
    expect(NodeReport.parse({})).toEqual({ volumes: [], events: [] });
  });

  it("a volume report defaults its offline replicas to none", () => {
    const beat = NodeReport.parse({ volumes: [{ volume: "v", epoch: 2, state: "SERVING" }] });
    expect(beat.volumes[0]?.replicas).toEqual([]);
  });

  it("join takes flat facts only, and a DNS name", () => {
    expect(JoinRequest.parse({ name: "vm-1.internal" }).facts).toEqual({});
    expect(
      JoinRequest.safeParse({ name: "vm-1", facts: { os: "linux", cpus: 2, spot: true } }).success,
    ).toBe(true);
    expect(JoinRequest.safeParse({ name: "vm-1", facts: { os: ["linux"] } }).success).toBe(false);
    expect(JoinRequest.safeParse({ name: "vm_1" }).success).toBe(false);
  });
});

describe("token contract", () => {
  it("defaults to a day and bounds the lifetime to a week", () => {
    expect(TokenCreate.parse({}).expiresInSeconds).toBe(86_400);
    expect(TokenCreate.safeParse({ expiresInSeconds: 7 * 86_400 }).success).toBe(true);
    expect(TokenCreate.safeParse({ expiresInSeconds: 7 * 86_400 + 1 }).success).toBe(false);
    expect(TokenCreate.safeParse({ expiresInSeconds: 59 }).success).toBe(false);
  });
});
