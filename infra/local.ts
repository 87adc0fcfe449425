/**
 * `npm start`: the local stack. Azurite (blobs and tables), the control
 * plane on http://127.0.0.1:7071 with the Azurite account registered as
 * pool `local`, and one agent (`pagedisk agent run`) joined as node
 * `local`, serving a 1 GiB volume `demo` that the control plane attached
 * to it. Restarting keeps everything: Azurite's data, the admin key, the
 * node's identity (no second join) and the volume's data. Ctrl-C stops the
 * agent (SIGTERM, waiting for it to drain and exit), the control plane and
 * Azurite, then exits 0.
 *
 * Everything under the state directory is its owner's only (directories
 * 0700, files 0600): Azurite's tables hold the pools' sealed connection
 * strings and the credentials' hashes, and beside them lie the key that
 * unseals those connection strings, the admin key and the agent's
 * credentials.
 *
 * Environment (the defaults are what users get):
 *   PAGEDISK_LOCAL_DIR      state directory (default .pagedisk/ at the repository root)
 *   PAGEDISK_AZURITE_PORT   Azurite's blob port (default 10000; tables on the port + 2)
 *   PAGEDISK_API_PORT       the control plane's port (default 7071)
 *   PAGEDISK_LOCAL_KERNEL   the agent's --kernel: auto (default), nbd, fuse or none
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { chmod, lstat, mkdir, readdir, rename } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { createInterface } from "node:readline";
import { ApiClient, ApiClientError } from "../agent/control/api-client.ts";
import { chooseKind, probeHost } from "../agent/host/open-binder.ts";
import type { Volume } from "../contract/volume.ts";
import { LOCAL_PORT, startLocalControlPlane } from "../functions/local.ts";
import { type Azurite, startAzurite } from "../test/harness/azurite.ts";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "dist/pagedisk.mjs");
const STATE = resolve(process.env.PAGEDISK_LOCAL_DIR || join(ROOT, ".pagedisk"));
const BLOB_PORT = port("PAGEDISK_AZURITE_PORT", 10000);
const API_PORT = port("PAGEDISK_API_PORT", LOCAL_PORT);
const AGENT_DIR = join(STATE, "agent");
const AGENT_LOG = join(STATE, "agent.log");
/** The node the local agent is, and the volume it serves. */
const NODE = "local";
const DEMO = "demo";
const DEMO_SIZE = 1024 ** 3;
const KERNEL_MODES = ["auto", "nbd", "fuse", "none"] as const;
type KernelMode = (typeof KERNEL_MODES)[number];

function port(name: string, fallback: number): number {
  const text = process.env[name];
  if (!text) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`${name} must be a TCP port (1-65535), got ${text}`);
  return n;
}

function fail(message: string): never {
  console.error(`pagedisk local stack: ${message}`);
  process.exit(1);
}

const running: {
  agent?: ChildProcess;
  controlPlane?: { close(): Promise<void> };
  azurite?: Azurite;
} = {};
let stopping: Promise<never> | undefined;

/** Agent first (it drains its exports into Azurite), then the control plane, then Azurite. */
function stop(code: number): Promise<never> {
  stopping ??= (async () => {
    const agent = running.agent;
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise((r) => agent.once("exit", r));
      agent.kill("SIGTERM");
      await exited;
    }
    await running.controlPlane?.close().catch(() => {});
    await running.azurite?.stop();
    process.exit(code);
  })();
  return stopping;
}
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));

/** The binding the agent can make here: `auto` falls back to `none` (exports only) with a note. */
async function kernelMode(): Promise<KernelMode> {
  const asked = (process.env.PAGEDISK_LOCAL_KERNEL || "auto") as KernelMode;
  if (!KERNEL_MODES.includes(asked)) fail(`PAGEDISK_LOCAL_KERNEL must be one of ${KERNEL_MODES.join(", ")}, got ${asked}`);
  if (asked !== "auto") return asked;
  if (process.getuid?.() !== 0) {
    console.log("note: not root, so volumes are served as NBD sockets only, without a /dev device (--kernel none)");
    return "none";
  }
  try {
    chooseKind("auto", await probeHost(true));
    return "auto";
  } catch (err) {
    console.log(`note: ${(err as Error).message}; volumes are served as NBD sockets only (--kernel none)`);
    return "none";
  }
}

/**
 * The node identity in the agent's state dir, if the registry still knows
 * it; one it forgot (Azurite's data removed) is set aside so the agent
 * joins afresh. Undefined: join with a new token.
 */
async function joinToken(api: ApiClient): Promise<string | undefined> {
  const identity = join(AGENT_DIR, "node.json");
  if (existsSync(identity)) {
    try {
      await api.getNode(NODE);
      return undefined;
    } catch (err) {
      if (!(err instanceof ApiClientError) || err.status !== 404) throw err;
      await rename(identity, `${identity}.forgotten`);
      console.log(`note: the registry no longer knows node ${NODE}; its old identity is in ${identity}.forgotten`);
    }
  }
  return (await api.createToken({ expiresInSeconds: 600 })).token;
}

type LogRecord = Record<string, unknown> & { msg?: string };

/**
 * Start the agent; resolves once it says it runs, with the record of the
 * demo volume serving still to come. That is watched from the agent's first
 * line: an agent that already holds the volume may serve it before it says
 * it runs.
 */
async function startAgent(
  origin: string,
  kernel: KernelMode,
  token: string | undefined,
): Promise<{ demoServing: Promise<LogRecord> }> {
  const agent = spawn(
    process.execPath,
    [BIN, "agent", "run", "--control-plane", origin, "--state-dir", AGENT_DIR, "--name", NODE, "--kernel", kernel],
    {
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: Ctrl-C reaches this script, which stops the agent in order.
      detached: true,
      env: { ...process.env, ...(token ? { PAGEDISK_JOIN_TOKEN: token } : {}) },
    },
  );
  running.agent = agent;
  agent.stderr!.pipe(createWriteStream(AGENT_LOG, { flags: "a" }));
  const records = createInterface({ input: agent.stderr! });
  const demoServing = new Promise<LogRecord>((served, failed) => {
    const watch = (line: string) => {
      let r: LogRecord;
      try {
        r = JSON.parse(line) as LogRecord;
      } catch {
        return;
      }
      if (r.volume !== DEMO) return;
      if (r.msg === "volume serving") served(r);
      else if (r.msg === "volume failed") failed(new Error(`volume ${DEMO} failed on the agent: ${String(r.message ?? r.code)}`));
      else return;
      records.off("line", watch);
    };
    records.on("line", watch);
    agent.once("exit", (code, signal) => failed(new Error(`the agent exited (${code ?? signal})`)));
  });
  // Awaited once the volume is attached; a failure before then is reported there, not as unhandled.
  demoServing.catch(() => {});
  agent.on("exit", (code, signal) => {
    if (!stopping) {
      console.error(`pagedisk local stack: the agent exited (${code ?? signal}); see ${AGENT_LOG}`);
      void stop(1);
    }
  });
  await new Promise<void>((ready, failed) => {
    createInterface({ input: agent.stdout! }).on("line", (line) => {
      console.log(line);
      if (line.includes(" running ")) ready();
    });
    agent.once("exit", (code) => failed(new Error(`the agent exited (${code}) before running; see ${AGENT_LOG}`)));
  });
  return { demoServing };
}

/**
 * `path` readable by its owner only (0700 a directory, 0600 a file), and with
 * `deep` everything below it; a missing path is left missing. Not used on
 * the agent's directory: the agent keeps its own modes there, and a FUSE
 * mount it left behind may not answer.
 */
async function ownerOnly(path: string, deep: boolean): Promise<void> {
  if (!existsSync(path)) return;
  const stats = await lstat(path);
  if (stats.isFile()) return chmod(path, 0o600);
  if (!stats.isDirectory()) return;
  await chmod(path, 0o700);
  if (deep) for (const name of await readdir(path)) await ownerOnly(join(path, name), true);
}

/** The demo volume exists and is attached to this node (kept as it is when it already is). */
async function ensureDemo(api: ApiClient): Promise<void> {
  let volume: Volume;
  try {
    volume = await api.getVolume(DEMO);
  } catch (err) {
    if (!(err instanceof ApiClientError) || err.status !== 404) throw err;
    volume = await api.createVolume({ name: DEMO, sizeBytes: DEMO_SIZE, replicas: 1 });
    console.log(`created volume ${DEMO} (1 GiB) on pool local`);
  }
  if (volume.status.ownerNode === NODE && volume.status.state === "ATTACHED") return;
  await api.attachVolume(DEMO, NODE);
  console.log(`attached volume ${DEMO} to node ${NODE}`);
}

// What this process, Azurite and the agent create is the owner's only (they inherit the umask);
// what an older version left laxer is made so too.
process.umask(0o077);
await mkdir(STATE, { recursive: true, mode: 0o700 });
await ownerOnly(STATE, false);
for (const name of await readdir(STATE)) {
  if (join(STATE, name) !== AGENT_DIR) await ownerOnly(join(STATE, name), true);
}
const kernel = await kernelMode();
const azurite = await startAzurite({
  table: true,
  location: join(STATE, "azurite"),
  blobPort: BLOB_PORT,
  tablePort: BLOB_PORT + 2,
}).catch((err: Error) =>
  fail(`Azurite did not start (are ports ${BLOB_PORT} and ${BLOB_PORT + 2} taken? PAGEDISK_AZURITE_PORT): ${err.message}`),
);
running.azurite = azurite;

const controlPlane = await startLocalControlPlane({
  connectionString: azurite.connectionString,
  stateDir: STATE,
  port: API_PORT,
  log: (line) => console.log(line),
}).catch(async (err: Error) => {
  console.error(`pagedisk local stack: the control plane did not start (is port ${API_PORT} taken? PAGEDISK_API_PORT): ${err.message}`);
  return stop(1);
});
running.controlPlane = controlPlane;
const api = new ApiClient({ apiUrl: controlPlane.apiUrl, apiKey: controlPlane.adminKey });

try {
  await api.createPool({
    name: "local",
    auth: { kind: "connectionString", connectionString: azurite.connectionString },
  });
} catch (err) {
  if (!(err instanceof ApiClientError) || err.status !== 409) {
    console.error(`pagedisk local stack: registering pool local failed: ${(err as Error).message}`);
    await stop(1);
  }
}

let device: string | null = null;
try {
  const origin = new URL(controlPlane.apiUrl).origin;
  const { demoServing } = await startAgent(origin, kernel, await joinToken(api));
  await ensureDemo(api);
  const serving = await demoServing;
  device = typeof serving.device === "string" ? serving.device : null;
} catch (err) {
  console.error(`pagedisk local stack: ${(err as Error).message}; see ${AGENT_LOG}`);
  await stop(1);
}

const here = relative(process.cwd(), STATE) || ".";
const socket = join(AGENT_DIR, "sockets", `${DEMO}.sock`);
// The CLI finds .pagedisk/local.json by itself; a state dir elsewhere needs saying.
const cli =
  STATE === join(ROOT, ".pagedisk")
    ? "node dist/pagedisk.mjs"
    : `PAGEDISK_API_URL=${controlPlane.apiUrl} PAGEDISK_API_KEY=$(node -p 'require("${join(STATE, "local.json")}").adminKey') node ${BIN}`;
console.log(`
pagedisk local stack is up (data stays in ${here}/).
  control plane   ${controlPlane.apiUrl}  (admin key in ${join(here, "local.json")}; API document at /openapi.json)
  Azurite         ${azurite.blobEndpoint}, ${azurite.tableEndpoint}; registered as pool local
  agent           node ${NODE}, kernel ${kernel}, state in ${join(here, "agent")}, log in ${join(here, "agent.log")}
  volume          ${DEMO}, 1 GiB, attached to node ${NODE}${device ? `, device ${device}` : ""}

Reach the demo volume:
  nbdinfo 'nbd+unix:///${DEMO}?socket=${socket}'
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' 'nbd+unix:///${DEMO}?socket=${socket}'${device ? `\n  lsblk ${device}` : ""}

Create and attach another volume (it appears as ${join(here, "agent", "sockets")}/<name>.sock):
  ${cli} volume create data --size 4GiB
  ${cli} volume attach data --node ${NODE}
  ${cli} node show ${NODE}

Ctrl-C stops the agent, the control plane and Azurite.`);
