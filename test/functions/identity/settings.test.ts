/**
 * Which registry account the settings name: a connection string, or a
 * Table endpoint under the managed identity, and a clear refusal of
 * anything else.
 */
import { describe, expect, it } from "vitest";
import { settingsFrom } from "../../../functions/settings.ts";

const CS = "UseDevelopmentStorage=true";
/** With the registry under the identity, the liveness table's account is named apart. */
const LIVENESS = { PAGEDISK_LIVENESS_CONNECTION_STRING: "AccountName=live;AccountKey=a2V5" };

describe("registry account settings", () => {
  it("takes PAGEDISK_REGISTRY_ACCOUNT_URL as a Table endpoint reached with the identity", () => {
    expect(
      settingsFrom({ PAGEDISK_REGISTRY_ACCOUNT_URL: "https://acct.table.core.windows.net/", ...LIVENESS })
        .registry,
    ).toEqual({ tableUrl: "https://acct.table.core.windows.net" });
  });

  it("needs the liveness account's connection string when the registry is reached with the identity", () => {
    expect(() =>
      settingsFrom({ PAGEDISK_REGISTRY_ACCOUNT_URL: "https://acct.table.core.windows.net" }),
    ).toThrow(/PAGEDISK_LIVENESS_CONNECTION_STRING/);
    expect(
      settingsFrom({ PAGEDISK_REGISTRY_ACCOUNT_URL: "https://acct.table.core.windows.net", ...LIVENESS })
        .livenessConnectionString,
    ).toBe(LIVENESS.PAGEDISK_LIVENESS_CONNECTION_STRING);
    // By connection string, the registry's account holds the liveness table too.
    expect(settingsFrom({ AzureWebJobsStorage: CS }).livenessConnectionString).toBeUndefined();
  });

  it("keeps connection strings, PAGEDISK_REGISTRY_CONNECTION_STRING before AzureWebJobsStorage", () => {
    expect(settingsFrom({ AzureWebJobsStorage: CS }).registry).toEqual({ connectionString: CS });
    expect(
      settingsFrom({ PAGEDISK_REGISTRY_CONNECTION_STRING: "a", AzureWebJobsStorage: CS }).registry,
    ).toEqual({ connectionString: "a" });
  });

  it("accepts the Functions host's identity-based AzureWebJobsStorage forms", () => {
    expect(settingsFrom({ AzureWebJobsStorage__accountName: "fnstore01", ...LIVENESS }).registry).toEqual({
      tableUrl: "https://fnstore01.table.core.windows.net",
    });
    expect(
      settingsFrom({
        AzureWebJobsStorage__tableServiceUri: "https://other.table.core.windows.net",
        AzureWebJobsStorage__accountName: "fnstore01",
        ...LIVENESS,
      }).registry,
    ).toEqual({ tableUrl: "https://other.table.core.windows.net" });
  });

  it("refuses both at once, neither, a bad URL or a bad account name, naming the settings", () => {
    expect(() =>
      settingsFrom({
        PAGEDISK_REGISTRY_CONNECTION_STRING: CS,
        PAGEDISK_REGISTRY_ACCOUNT_URL: "https://acct.table.core.windows.net",
      }),
    ).toThrow(/PAGEDISK_REGISTRY_ACCOUNT_URL .* or PAGEDISK_REGISTRY_CONNECTION_STRING .*not both/);
    expect(() => settingsFrom({})).toThrow(
      /PAGEDISK_REGISTRY_ACCOUNT_URL.*PAGEDISK_REGISTRY_CONNECTION_STRING/,
    );
    expect(() =>
      settingsFrom({ PAGEDISK_REGISTRY_ACCOUNT_URL: "http://acct.table.core.windows.net" }),
    ).toThrow(/^PAGEDISK_REGISTRY_ACCOUNT_URL must be .*: must be https/);
    expect(() =>
      settingsFrom({ PAGEDISK_REGISTRY_ACCOUNT_URL: "https://acct.table.core.windows.net?sig=x" }),
    ).toThrow(/no SAS/);
    expect(() => settingsFrom({ AzureWebJobsStorage__accountName: "Not-A-Name" })).toThrow(
      /AzureWebJobsStorage__accountName/,
    );
  });
});

describe("repair and reconciliation settings", () => {
  const base = { PAGEDISK_REGISTRY_CONNECTION_STRING: "UseDevelopmentStorage=true" };

  it("take the pool thresholds and the orphan grace in seconds", () => {
    const settings = settingsFrom({
      ...base,
      PAGEDISK_POOL_SUSPECT_WINDOW_SECONDS: "20",
      PAGEDISK_POOL_BAD_AFTER_SECONDS: "40",
      PAGEDISK_POOL_PERMANENT_AFTER_SECONDS: "900",
      PAGEDISK_POOL_PROBE_TIMEOUT_SECONDS: "3",
      PAGEDISK_REPORT_GRACE_SECONDS: "7",
      PAGEDISK_ORPHAN_GRACE_SECONDS: "3600",
      PAGEDISK_DETACH_DRAIN_SECONDS: "40",
    });
    expect(settings.sweep.repair).toEqual({
      suspectWindowMs: 20_000,
      badAfterMs: 40_000,
      permanentAfterMs: 900_000,
      probeTimeoutMs: 3_000,
      reportGraceMs: 7_000,
    });
    expect(settings.orphanGraceMs).toBe(3_600_000);
    expect(settingsFrom(base).orphanGraceMs).toBe(10 * 60_000);
    expect(settings.detachDrainMs).toBe(40_000);
    expect(settingsFrom(base).detachDrainMs).toBe(15_000);
    expect(() => settingsFrom({ ...base, PAGEDISK_DETACH_DRAIN_SECONDS: "46" })).toThrow(
      /PAGEDISK_DETACH_DRAIN_SECONDS must be at most 45 seconds/,
    );
  });

  it("refuse a threshold that is not a whole number of seconds, naming it", () => {
    for (const name of [
      "PAGEDISK_POOL_PERMANENT_AFTER_SECONDS",
      "PAGEDISK_ORPHAN_GRACE_SECONDS",
      "PAGEDISK_DETACH_DRAIN_SECONDS",
    ]) {
      expect(() => settingsFrom({ ...base, [name]: "1.5" })).toThrow(name);
      expect(() => settingsFrom({ ...base, [name]: "0" })).toThrow(name);
    }
  });
});

describe("event retention setting", () => {
  const base = { PAGEDISK_REGISTRY_CONNECTION_STRING: "UseDevelopmentStorage=true" };

  it("is 30 days unless PAGEDISK_EVENT_RETENTION_DAYS says otherwise", () => {
    const days = (text?: string) =>
      settingsFrom({ ...base, PAGEDISK_EVENT_RETENTION_DAYS: text }).eventRetentionDays;
    expect(days(undefined)).toBe(30);
    expect(days("")).toBe(30);
    expect(days("7")).toBe(7);
    expect(days("1")).toBe(1);
  });

  it("refuses anything but a whole number of days, at least one", () => {
    for (const bad of ["0", "-3", "1.5", "30d", "x"]) {
      expect(() => settingsFrom({ ...base, PAGEDISK_EVENT_RETENTION_DAYS: bad })).toThrow(
        `PAGEDISK_EVENT_RETENTION_DAYS must be a whole number of days, at least 1, got ${bad}`,
      );
    }
  });
});
