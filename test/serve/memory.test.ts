/**
 * `pagedisk serve memory:` as users run it (the bundled binary): options,
 * the stdout line, exit codes, and refusals of bad arguments.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { BIN, startServe } from "../harness/serve.ts";
import { runTool } from "../harness/tools.ts";

const exec = promisify(execFile);

/** Run the bundled binary: its exit code and everything it printed. */
async function pagedisk(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [BIN, ...args]);
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

describe("pagedisk serve memory:", () => {
  it("serves read-only over TCP on a port the kernel picks, and refuses writes with EPERM", async () => {
    const serve = await startServe("memory:64MiB", [
      "--read-only",
      "--listen",
      "tcp:127.0.0.1:0",
      "--export-name",
      "ro",
    ]);
    expect(serve.stdout[0]).toMatch(/read-only/);
    expect(serve.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/ro$/);
    expect(serve.uri).not.toMatch(/:0\//);

    const info = await runTool("nbdinfo", ["--json", serve.uri]);
    const json = JSON.parse(info.stdout) as { exports: Array<Record<string, unknown>> };
    expect(json.exports[0]).toMatchObject({ "export-name": "ro", "export-size": 64 * 1024 * 1024, is_read_only: true });

    const write = await runTool("qemu-io", ["-f", "raw", "-c", "write -P 1 0 4k", serve.uri], { allowFailure: true });
    expect(write.stdout + write.stderr).toMatch(/Operation not permitted|read-only|Permission denied/i);
    const read = await runTool("qemu-io", ["-f", "raw", "-r", "-c", "read -P 0 0 64k", serve.uri]);
    expect(read.stdout).toMatch(/read 65536\/65536 bytes/);
    expect(await serve.stop("SIGINT")).toBe(0);
  });

  it("stops cleanly on SIGTERM after serving a client, exit 0", async () => {
    const serve = await startServe("memory:32MiB");
    const out = await runTool("qemu-io", ["-f", "raw", "-c", "write -P 7 0 1M", "-c", "read -P 7 0 1M", serve.uri]);
    expect(out.stdout).toMatch(/read 1048576\/1048576 bytes/);
    expect(await serve.stop("SIGTERM")).toBe(0);
    expect(serve.logs.some((l) => l.msg === "stopped" && l.code === 0)).toBe(true);
  });

  it.each([
    [["memory:64MiB", "--listen", "unix:/tmp/x.sock", "--lease", "auto"], /--lease applies to blobs/],
    [["memory:64MiB", "--listen", "unix:/tmp/x.sock", "--create"], /--create applies to blobs/],
    [["memory:100", "--listen", "unix:/tmp/x.sock"], /multiple of 512/],
    [["memory:1GiB", "--listen", "udp:1"], /expected unix:PATH or tcp:HOST:PORT/],
    [["memory:1GiB"], /required option '--listen/],
    [["http://127.0.0.1:1/a/b/c", "--listen", "unix:/tmp/x.sock", "--size", "1GiB"], /--size is only used with --create/],
  ])("refuses %j with a clear message and exit 1", async (args, message) => {
    const { code, out } = await pagedisk(["serve", ...args]);
    expect(code).toBe(1);
    expect(out).toMatch(message);
  });
});
