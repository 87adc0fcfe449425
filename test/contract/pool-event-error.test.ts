import { describe, expect, it } from "vitest";
import { API_ERROR_CODES, ERROR_STATUS, ErrorBody } from "../../contract/errors.ts";
import { EventQuery } from "../../contract/event.ts";
import { ContainerName, NodeName } from "../../contract/names.ts";
import { PoolCreate } from "../../contract/pool.ts";

describe("PoolCreate", () => {
  const auth = { kind: "connectionString", connectionString: "UseDevelopmentStorage=true" };

  it("defaults the container to pagedisk", () => {
    expect(PoolCreate.parse({ name: "p1", auth })).toEqual({
      name: "p1",
      container: "pagedisk",
      auth,
    });
  });

  it("refuses an unknown auth kind and a missing connection string", () => {
    expect(PoolCreate.safeParse({ name: "p1", auth: { kind: "sharedKey" } }).success).toBe(false);
    expect(PoolCreate.safeParse({ name: "p1", auth: { kind: "connectionString" } }).success).toBe(
      false,
    );
    expect(
      PoolCreate.safeParse({ name: "p1", auth: { ...auth, connectionString: "" } }).success,
    ).toBe(false);
  });
});

describe("names", () => {
  it.each([
    ["abc", true],
    ["a-b-c", true],
    ["ab", false],
    ["a--b", false],
    ["-ab", false],
    ["ABC", false],
    ["a".repeat(64), false],
  ])("container %s valid: %s", (name, valid) => {
    expect(ContainerName.safeParse(name).success).toBe(valid);
  });

  it.each([
    ["vm-1", true],
    ["vm-1.internal.cloudapp.net", true],
    ["vm..1", false],
    ["VM-1", false],
    [`${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`, true],
    [`${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(62)}`, false],
  ])("node %s valid: %s", (name, valid) => {
    expect(NodeName.safeParse(name).success).toBe(valid);
  });
});

describe("EventQuery", () => {
  it("coerces the limit from the query string and bounds it", () => {
    expect(EventQuery.parse({ limit: "20" }).limit).toBe(20);
    expect(EventQuery.parse({}).limit).toBe(100);
    for (const limit of ["0", "501", "abc", "1.5"])
      expect(EventQuery.safeParse({ limit }).success).toBe(false);
  });

  it("refuses unknown filters", () => {
    expect(EventQuery.safeParse({ vol: "db" }).success).toBe(false);
  });
});

describe("errors", () => {
  it("gives every code a 4xx or 5xx status", () => {
    for (const code of API_ERROR_CODES) {
      expect(ERROR_STATUS[code] >= 400 && ERROR_STATUS[code] < 600).toBe(true);
    }
  });

  it("describes the error body and only known codes", () => {
    expect(ErrorBody.safeParse({ error: { code: "VolumeNotFound", message: "no" } }).success).toBe(
      true,
    );
    expect(ErrorBody.safeParse({ error: { code: "Oops", message: "no" } }).success).toBe(false);
  });
});
