/**
 * Where the CLI finds the API: flags over environment over local.json, and
 * the saved local key never sent to another URL.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiConfigError, resolveApiConfig } from "../../agent/control/api-config.ts";
import { formatBytes } from "../../agent/manage/output.ts";

const LOCAL = { apiUrl: "http://127.0.0.1:7071/api/v1", adminKey: "local-key" };
let root: string;
let inside: string;
let outside: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "pagedisk-config-"));
  inside = join(root, "repo", "sub");
  outside = join(root, "elsewhere");
  await mkdir(join(root, "repo", ".pagedisk"), { recursive: true });
  await mkdir(inside, { recursive: true });
  await mkdir(outside, { recursive: true });
  await writeFile(join(root, "repo", ".pagedisk", "local.json"), JSON.stringify(LOCAL));
});
afterAll(() => rm(root, { recursive: true, force: true }));

describe("resolveApiConfig", () => {
  it("takes local.json from a parent directory when nothing else is given", async () => {
    expect(await resolveApiConfig({ env: {}, cwd: inside })).toEqual({
      apiUrl: LOCAL.apiUrl,
      apiKey: LOCAL.adminKey,
    });
  });

  it("prefers flags to the environment and the environment to local.json", async () => {
    const env = { PAGEDISK_API_URL: "https://env.example/api/v1", PAGEDISK_API_KEY: "env-key" };
    expect(await resolveApiConfig({ env, cwd: inside })).toEqual({
      apiUrl: env.PAGEDISK_API_URL,
      apiKey: "env-key",
    });
    const flags = { apiUrl: "https://flag.example/api/v1", apiKey: "flag-key" };
    expect(await resolveApiConfig({ flags, env, cwd: inside })).toEqual(flags);
  });

  it("uses the saved key only for the saved URL", async () => {
    const same = await resolveApiConfig({
      env: { PAGEDISK_API_URL: `${LOCAL.apiUrl}/` },
      cwd: inside,
    });
    expect(same.apiKey).toBe(LOCAL.adminKey);
    await expect(
      resolveApiConfig({ env: { PAGEDISK_API_URL: "https://prod.example" }, cwd: inside }),
    ).rejects.toThrow(/no API key for https:\/\/prod\.example/);
  });

  it("adds /api/v1 to a bare origin and refuses what is not an http(s) URL", async () => {
    const env = { PAGEDISK_API_URL: "https://app.example/", PAGEDISK_API_KEY: "k" };
    expect((await resolveApiConfig({ env, cwd: outside })).apiUrl).toBe(
      "https://app.example/api/v1",
    );
    await expect(
      resolveApiConfig({
        env: { PAGEDISK_API_URL: "ftp://x", PAGEDISK_API_KEY: "k" },
        cwd: outside,
      }),
    ).rejects.toBeInstanceOf(ApiConfigError);
  });

  it("fails with what to set when nothing is found", async () => {
    await expect(resolveApiConfig({ env: {}, cwd: outside })).rejects.toThrow(
      /PAGEDISK_API_URL and PAGEDISK_API_KEY/,
    );
  });
});

describe("formatBytes", () => {
  it.each([
    [512, "512 B"],
    [1536, "1.5 KiB"],
    [8 * 1024 ** 3, "8 GiB"],
    [8 * 1024 ** 4, "8 TiB"],
    [1_000_000_512, "953.67 MiB"],
  ])("%d -> %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});
