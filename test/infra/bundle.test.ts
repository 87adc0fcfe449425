/**
 * The agent bundle carries what the agent runs and nothing of the control
 * plane's schema library: zod alone is about 760 KiB of it, and a value
 * import from a contract module that uses zod brings all of it in (the
 * shared words live in contract/signals.ts for that reason).
 */
import { readFile } from "node:fs/promises";
import { beforeAll, describe, expect, it } from "vitest";
import { BUNDLE, ensureBundleBuilt } from "./installer.ts";

let text: string;
beforeAll(async () => {
  await ensureBundleBuilt();
  text = await readFile(BUNDLE, "utf8");
});

describe("dist/pagedisk.mjs", () => {
  it("does not carry zod", () => {
    expect(text.includes("ZodError")).toBe(false);
  });

  it("carries the words the agent shares with the control plane", () => {
    expect(text).toContain("its writer was lost");
    expect(text).toContain("replicas-diverged");
  });
});
