/**
 * NBD limits as `pagedisk serve` and the agent get them: the flags that set
 * them, with their --help lines and defaults, and an export served the way
 * both serve one (`exportVolume`): limits applied, and one in-flight budget
 * for every export of the process.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryBackend } from "../../agent/engine/memory.ts";
import {
  LIMIT_FLAGS,
  limitsFromFlags,
  parseBytes,
  parseCount,
  UsageError,
} from "../../agent/serve/args.ts";
import { exportVolume, type ServeLimits, type VolumeExport } from "../../agent/serve/export.ts";
import { CMD, OPT, REP, RawClient } from "../nbd/raw-client.ts";

const MiB = 1024 * 1024;

/** The serve command's limit flags, wired as the CLI wires them. */
function serveCommand(): Command {
  const cmd = new Command("serve").exitOverride();
  for (const flag of LIMIT_FLAGS) cmd.option(flag.flags, flag.help, (text: string) => flag.parse(text));
  return cmd;
}

describe("pagedisk serve limit flags", () => {
  it("has a --help line for each, with its default", () => {
    const help = serveCommand().helpInformation().replace(/\s+/g, " ");
    expect(help).toMatch(/--max-inflight <size> .*\(default 256MiB\)/);
    expect(help).toMatch(/--max-inflight-per-connection <size> .*\(default 96MiB\)/);
    expect(help).toMatch(/--max-connections <n> .*\(default 256\)/);
    expect(help).toMatch(/--max-connections-per-export <n> .*\(default 128\)/);
  });

  it("turns the flags given into limits, and leaves the others to their defaults", () => {
    const cmd = serveCommand();
    cmd.parse(["--max-inflight", "1GiB", "--max-connections-per-export", "4"], { from: "user" });
    expect(limitsFromFlags(cmd.opts())).toEqual({
      inflightBudget: 1024 * MiB,
      maxConnectionsPerExport: 4,
    });
  });

  it.each([
    [() => parseBytes("lots", "--max-inflight-per-connection"), /invalid --max-inflight-per-connection "lots"/],
    [() => parseBytes("0", "--max-inflight-per-connection"), /examples: 256MiB/],
    [() => parseCount("0", "--max-connections"), /at least 1/],
    [() => parseCount("2.5", "--max-connections"), /whole number/],
    // A budget that cannot hold a 32 MiB request would leave that request waiting forever.
    [() => LIMIT_FLAGS[0]!.parse("16MiB"), /must be at least 33554688 bytes/],
  ])("refuses bad values with a usage error (%#)", (parse, message) => {
    expect(parse).toThrow(UsageError);
    expect(parse).toThrow(message);
  });
});

describe("exportVolume limits", () => {
  let dir: string | undefined;
  const served: VolumeExport[] = [];
  const clients: RawClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const s of served.splice(0)) await s.drain();
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  async function serveMemory(name: string, limits?: ServeLimits): Promise<VolumeExport> {
    dir ??= await mkdtemp(join(tmpdir(), "pagedisk-serve-limits-"));
    const s = await exportVolume(new MemoryBackend({ size: 64 * MiB }), {
      name,
      description: name,
      listen: { unix: join(dir, `${name}.sock`) },
      log: pino({ level: "silent" }),
      onFailed: () => {},
      ...(limits ? { limits } : {}),
    });
    served.push(s);
    return s;
  }

  async function connect(s: VolumeExport): Promise<RawClient> {
    const c = await RawClient.connect((s.address as { unix: string }).unix);
    clients.push(c);
    return c;
  }

  it("applies the connection limit given", async () => {
    const s = await serveMemory("vol", { maxConnectionsPerExport: 1 });
    await (await connect(s)).handshake("vol");
    const second = await connect(s);
    await second.greet();
    expect((await second.go("vol")).final).toBe(REP.ERR_POLICY);
    expect((await second.option(OPT.ABORT))[0]!.type).toBe(REP.ACK);
  });

  it("charges every export of the process to one budget, of the default size", async () => {
    const a = await serveMemory("a");
    const b = await serveMemory("b");
    const c = await connect(a);
    await c.handshake("a");
    c.send({ type: CMD.READ, handle: 1n, offset: 0, length: 32 * MiB });
    // The reply has started; the client reads no further, so the rest stays unsent and charged.
    await c.read(16);
    const seenFromB = b.server.stats.budget;
    expect(seenFromB.limit).toBe(256 * MiB);
    expect(seenFromB.used).toBeGreaterThanOrEqual(32 * MiB);
    expect(seenFromB).toEqual(a.server.stats.budget);
  });
});
