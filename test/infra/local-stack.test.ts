/**
 * `node infra/local.ts` (what `npm start` runs after the build) as users
 * run it: a child process with its own state dir and free ports, waited on
 * through what it prints. The printed nbdinfo command is run as printed;
 * data written through the export survives a restart, and the second start
 * is the same node (no second join).
 *
 * Everything it keeps is its owner's only, even in a state directory an
 * older version left open (0755), and no file holds the pool's account key
 * in the clear.
 *
 * The agent runs with PAGEDISK_LOCAL_KERNEL=none here: a kernel binding
 * (nbdfuse + loop) is kept across agent restarts by design, and this test
 * must leave nothing behind. test/control/agent.test.ts covers binding.
 */
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { chmod, lstat, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ApiClient } from "../../agent/control/api-client.ts";
import { DEV_ACCOUNT_KEY } from "../../agent/pageblob/location.ts";
import { freePort } from "../harness/azurite.ts";
import { CMD, FLAG, RawClient } from "../nbd/raw-client.ts";
import { ensureBundleBuilt, REPOSITORY } from "./installer.ts";

const run = promisify(execFile);
const GiB = 1024 ** 3;
/** The last line of what the stack prints once it is up. */
const READY = "Ctrl-C stops the agent, the control plane and Azurite.";

let dir: string;
let env: NodeJS.ProcessEnv;

/** Whether `port` can be listened on at this moment. */
async function isFree(port: number): Promise<boolean> {
  const srv = createServer();
  srv.listen(port, "127.0.0.1");
  const [outcome] = await Promise.race([once(srv, "listening").then(() => ["ok"]), once(srv, "error")]);
  if (outcome !== "ok") return false;
  srv.close();
  await once(srv, "close");
  return true;
}

/** A free blob port whose table port (+2) is free too. */
async function azuritePort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 2 < 65536 && (await isFree(port + 2))) return port;
  }
}

beforeAll(async () => {
  await ensureBundleBuilt();
  dir = await mkdtemp(join(tmpdir(), "pagedisk-local-"));
  // As an older version left `.pagedisk/`: open to everyone.
  await chmod(dir, 0o755);
  env = {
    ...process.env,
    PAGEDISK_LOCAL_DIR: dir,
    PAGEDISK_AZURITE_PORT: String(await azuritePort()),
    PAGEDISK_API_PORT: String(await freePort()),
    PAGEDISK_LOCAL_KERNEL: "none",
  };
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Stack {
  /** Everything printed on stdout up to and including READY. */
  printed: string;
  /** Resolves with the exit code (or signal). */
  exited: Promise<number | string>;
  stop(): Promise<number | string>;
}

async function startStack(): Promise<Stack> {
  const child = spawn(process.execPath, [join(REPOSITORY, "infra/local.ts")], {
    cwd: REPOSITORY,
    env,
    stdio: ["ignore", "pipe", "pipe"],
    // A process group of its own, as a shell gives a foreground job: Ctrl-C goes to the group.
    detached: true,
  });
  const exited = new Promise<number | string>((done) =>
    child.once("exit", (code, signal) => done(code ?? signal ?? -1)),
  );
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: string[] = [];
  const printed = await new Promise<string>((ready, failed) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      lines.push(line);
      if (line === READY) ready(lines.join("\n"));
    });
    void exited.then((code) =>
      failed(new Error(`the stack exited (${code}) before it was up:\n${lines.join("\n")}\n${stderr}`)),
    );
  });
  return {
    printed,
    exited,
    /** Ctrl-C: SIGINT to the whole group (the script and its Azurite; the agent has its own). */
    stop() {
      process.kill(-child.pid!, "SIGINT");
      return exited;
    },
  };
}

/** The demo volume's NBD URI and socket, as printed. */
function printedUri(printed: string): { uri: string; socket: string } {
  const uri = /nbdinfo '([^']+)'/.exec(printed)?.[1];
  expect(uri).toBeDefined();
  const socket = new URL(uri!).searchParams.get("socket")!;
  return { uri: uri!, socket };
}

async function nbd<T>(socket: string, use: (client: RawClient) => Promise<T>): Promise<T> {
  const client = await RawClient.connect(socket);
  try {
    await client.handshake("demo");
    return await use(client);
  } finally {
    client.close();
  }
}

async function localApi(): Promise<ApiClient> {
  const state = JSON.parse(await readFile(join(dir, "local.json"), "utf8")) as { apiUrl: string; adminKey: string };
  return new ApiClient({ apiUrl: state.apiUrl, apiKey: state.adminKey });
}

function joins(log: string): number {
  return log.split("\n").filter((l) => l.includes('"msg":"joined the cluster"')).length;
}

const data = Buffer.alloc(65536, 0x5c);

it("comes up with one agent serving the demo volume; the printed nbdinfo command reaches it; Ctrl-C exits 0", async () => {
  const stack = await startStack();
  try {
    expect(stack.printed).toContain("created volume demo (1 GiB) on pool local");
    expect(stack.printed).toContain("attached volume demo to node local");
    expect(stack.printed).toMatch(/volume create data --size 4GiB\n.*volume attach data --node local/);
    const { uri, socket } = printedUri(stack.printed);
    expect(socket).toBe(join(dir, "agent", "sockets", "demo.sock"));

    const { stdout } = await run("nbdinfo", ["--json", uri]);
    const info = JSON.parse(stdout) as { exports: Array<{ "export-name": string; "export-size": number }> };
    expect(info.exports[0]).toMatchObject({ "export-name": "demo", "export-size": GiB });

    const reply = await nbd(socket, (c) =>
      c.request({ type: CMD.WRITE, handle: 1n, offset: 1 << 20, flags: FLAG.FUA, payload: data }),
    );
    expect(reply.error).toBe(0);

    const api = await localApi();
    expect((await api.listNodes()).items.map((n) => n.name)).toEqual(["local"]);
    expect((await api.getVolume("demo")).status).toMatchObject({ state: "ATTACHED", ownerNode: "local" });
  } finally {
    expect(await stack.stop()).toBe(0);
  }
  const log = await readFile(join(dir, "agent.log"), "utf8");
  expect(joins(log)).toBe(1);
  expect(log).toContain('"msg":"agent stopped"');
});

it("a second start is the same node (no second join) and serves the data written before", async () => {
  const identity = await readFile(join(dir, "agent", "node.json"), "utf8");
  const stack = await startStack();
  try {
    expect(stack.printed).not.toContain("created volume demo");
    expect(stack.printed).not.toContain("attached volume demo");
    const { socket } = printedUri(stack.printed);
    const reply = await nbd(socket, (c) =>
      c.request({ type: CMD.READ, handle: 2n, offset: 1 << 20, length: data.length }),
    );
    expect(reply.error).toBe(0);
    expect(reply.data).toEqual(data);
    expect(await readFile(join(dir, "agent", "node.json"), "utf8")).toBe(identity);
    const api = await localApi();
    expect((await api.listNodes()).items.map((n) => n.name)).toEqual(["local"]);
    expect((await api.listTokens()).items).toHaveLength(1);
  } finally {
    expect(await stack.stop()).toBe(0);
  }
  expect(joins(await readFile(join(dir, "agent.log"), "utf8"))).toBe(1);
});

/** Every path under `root` (itself included) with its permission bits. */
async function modes(root: string): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  const walk = async (path: string) => {
    const stats = await lstat(path);
    found.set(path, stats.mode & 0o777);
    if (stats.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
  };
  await walk(root);
  return found;
}

it("keeps its state its owner's only, and no file holds the pool's account key", async () => {
  const stack = await startStack();
  let running: Map<string, number>;
  try {
    running = await modes(dir);
  } finally {
    expect(await stack.stop()).toBe(0);
  }
  const stopped = await modes(dir);
  const open = [...running, ...stopped]
    .filter(([, mode]) => (mode & 0o077) !== 0)
    .map(([path, mode]) => `${relative(dir, path) || "."} ${mode.toString(8)}`);
  expect([...new Set(open)]).toEqual([]);
  expect(stopped.get(dir)).toBe(0o700);
  // What holds secrets is there: the registry (Azurite's table file), the sealing key, the admin key.
  for (const file of ["azurite/__azurite_db_table__.json", "secrets.key", "local.json", "agent/node.json"]) {
    expect(stopped.get(join(dir, file)), file).toBe(0o600);
  }
  expect(stopped.get(join(dir, "azurite"))).toBe(0o700);
  const registry = await readFile(join(dir, "azurite/__azurite_db_table__.json"), "utf8");
  expect(registry).toContain("sealedConnectionString");
  for (const [path] of stopped) {
    if (!(await lstat(path)).isFile()) continue;
    expect(await readFile(path, "utf8"), path).not.toContain(DEV_ACCOUNT_KEY);
  }
});
