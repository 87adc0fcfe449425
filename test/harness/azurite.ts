/**
 * Azurite for tests: the real Blob (and optionally Table) service as a child
 * process on free loopback ports (below the ephemeral range), with its data
 * in a temp dir. `stop()` keeps the data so `start()` can bring the same
 * account back on the same ports (outage tests); `dispose()` stops it and
 * removes the data.
 *
 *   const azurite = await startAzurite();
 *   afterAll(() => azurite.dispose());
 *
 * `npm start` uses it too, with a kept data dir and fixed ports.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME } from "../../agent/pageblob/location.ts";

export interface AzuriteOptions {
  /** Also run the Table service (the control plane's registry). */
  table?: boolean;
  /** Keep data in memory only; `stop()` then loses it. */
  inMemory?: boolean;
  /**
   * Keep the data in this directory instead of a temp dir: it survives
   * `dispose()` and the death of the calling process (the local stack).
   */
  location?: string;
  /** Fixed ports instead of free ones chosen here (see `freePort`). */
  blobPort?: number;
  tablePort?: number;
  /**
   * Serve HTTPS with this certificate and key (PEM file paths); endpoints
   * and the connection string then say https. The caller makes its
   * process trust the certificate.
   */
  tls?: { cert: string; key: string };
  /**
   * Run it on this CPU only (taskset, util-linux). The bench gives each
   * emulated storage account a core of its own, as accounts in Azure do not
   * share the writer's machine or each other's.
   */
  cpu?: number;
  /**
   * Also accept Entra ID bearer tokens (`--oauth basic`, needs `tls`):
   * Azurite checks their audience, issuer and lifetime, not their
   * signature, and hands out user delegation keys.
   */
  oauth?: "basic";
}

export interface Azurite {
  readonly accountName: string;
  readonly accountKey: string;
  /** e.g. `http://127.0.0.1:41234/devstoreaccount1` */
  readonly blobEndpoint: string;
  /** Set when started with `table: true`. */
  readonly tableEndpoint: string | undefined;
  readonly connectionString: string;
  /** Data directory (`--location`). */
  readonly location: string;
  readonly running: boolean;
  /** Start again after `stop()`, same ports and data. */
  start(): Promise<void>;
  /** Stop the services; data stays. */
  stop(): Promise<void>;
  /** Stop and delete the data dir. */
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const HOST = "127.0.0.1";

/**
 * Runs Azurite's main inside a node that exits when its stdin closes, i.e.
 * when the test process is gone: a worker killed on timeout (where no exit
 * handler runs) leaves neither an Azurite nor its temp data behind. argv
 * stays [node, main.js, ...flags] for Azurite's own parser. What it writes
 * is the owner's only (umask 077): its files hold the registry, credential
 * hashes included. Set here, in the child, because a worker thread may not
 * set its process's umask.
 */
const WATCHDOG = `
process.umask(0o077);
process.stdin.on("end", () => {
  const at = process.argv.indexOf("--location");
  if (at > 0 && !process.env.PAGEDISK_AZURITE_KEEP) require("node:fs").rmSync(process.argv[at + 1], { recursive: true, force: true });
  process.exit(0);
}).resume();
// Watching stdin must not keep the process alive: Azurite exits on SIGINT by letting its loop drain.
process.stdin.unref();
require(process.argv[1]);`;
const azuriteDir = dirname(createRequire(import.meta.url).resolve("azurite/package.json"));

/** Start Azurite and resolve once every service says it is listening. */
export async function startAzurite(opts: AzuriteOptions = {}): Promise<Azurite> {
  const location = opts.location ?? (await mkdtemp(join(tmpdir(), "pagedisk-azurite-")));
  // Ports we chose can still be taken before Azurite binds them (another
  // worker's pick): then choose again. Ports the caller fixed fail at once.
  const chosen = opts.blobPort === undefined && !(opts.table && opts.tablePort !== undefined);
  for (let attempt = 1; ; attempt++) {
    const blobPort = opts.blobPort ?? (await freePort());
    const tablePort = opts.table ? (opts.tablePort ?? (await freePort())) : undefined;
    const az = new AzuriteProcesses(location, blobPort, tablePort, opts);
    try {
      await az.start();
      return az;
    } catch (err) {
      const taken = err instanceof Error && err.message.includes("EADDRINUSE");
      if (chosen && taken && attempt < PORT_ATTEMPTS) continue; // start() has stopped what it spawned
      await az.dispose();
      throw err;
    }
  }
}

const PORT_ATTEMPTS = 5;

class AzuriteProcesses implements Azurite {
  readonly accountName = DEV_ACCOUNT_NAME;
  readonly accountKey = DEV_ACCOUNT_KEY;
  readonly blobEndpoint: string;
  readonly tableEndpoint: string | undefined;
  readonly connectionString: string;
  readonly location: string;
  readonly #blobPort: number;
  readonly #tablePort: number | undefined;
  readonly #opts: AzuriteOptions;
  #children: ChildProcess[] = [];
  readonly #killOnExit = () => {
    for (const c of this.#children) c.kill("SIGKILL");
  };

  constructor(
    location: string,
    blobPort: number,
    tablePort: number | undefined,
    opts: AzuriteOptions,
  ) {
    this.location = location;
    this.#blobPort = blobPort;
    this.#tablePort = tablePort;
    this.#opts = opts;
    const scheme = opts.tls ? "https" : "http";
    this.blobEndpoint = `${scheme}://${HOST}:${blobPort}/${DEV_ACCOUNT_NAME}`;
    this.tableEndpoint = tablePort
      ? `${scheme}://${HOST}:${tablePort}/${DEV_ACCOUNT_NAME}`
      : undefined;
    this.connectionString = [
      `DefaultEndpointsProtocol=${scheme}`,
      `AccountName=${DEV_ACCOUNT_NAME}`,
      `AccountKey=${DEV_ACCOUNT_KEY}`,
      `BlobEndpoint=${this.blobEndpoint}`,
      ...(this.tableEndpoint ? [`TableEndpoint=${this.tableEndpoint}`] : []),
    ].join(";");
  }

  get running(): boolean {
    return this.#children.length > 0;
  }

  async start(): Promise<void> {
    if (this.running) return;
    // If the test process dies without cleanup, do not leave servers behind.
    process.on("exit", this.#killOnExit);
    const common = ["--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose"];
    if (this.#opts.tls) common.push("--cert", this.#opts.tls.cert, "--key", this.#opts.tls.key);
    if (this.#opts.oauth) common.push("--oauth", this.#opts.oauth);
    // Azurite refuses --location together with --inMemoryPersistence.
    common.push(
      ...(this.#opts.inMemory ? ["--inMemoryPersistence"] : ["--location", this.location]),
    );
    const services: Array<[service: "blob" | "table", port: number]> = [["blob", this.#blobPort]];
    if (this.#tablePort) services.push(["table", this.#tablePort]);
    try {
      await Promise.all(
        services.map(async ([service, port]) => {
          // Ready when it says so; an early exit (port taken, bad flag) fails at once with its output.
          const { listening, exited } = this.#spawn(service, [
            `--${service}Host`,
            HOST,
            `--${service}Port`,
            String(port),
            ...common,
          ]);
          await Promise.race([listening, exited]);
        }),
      );
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    const children = this.#children;
    this.#children = [];
    await Promise.all(children.map(stopChild));
    process.off("exit", this.#killOnExit);
  }

  async dispose(): Promise<void> {
    await this.stop();
    if (!this.#opts.location) await rm(this.location, { recursive: true, force: true });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  /**
   * Spawn one service. `listening` resolves when Azurite prints that it
   * listens (even with --silent it prints that line); `exited` only ever
   * rejects, when the process exits.
   */
  #spawn(
    service: "blob" | "table",
    args: string[],
  ): { listening: Promise<void>; exited: Promise<never> } {
    const main = join(azuriteDir, "dist", "src", service, "main.js");
    const command = [process.execPath, "-e", WATCHDOG, main, ...args];
    // taskset execs the command: the child's pid, signals and exit are Azurite's own.
    const pinned = this.#opts.cpu === undefined ? command : ["taskset", "-c", String(this.#opts.cpu), ...command];
    const child = spawn(pinned[0]!, pinned.slice(1), {
      stdio: ["pipe", "pipe", "pipe"],
      // Its own process group: a terminal's Ctrl-C reaches our stop(), which
      // stops Azurite last, not Azurite directly before the agent has drained.
      detached: true,
      env: {
        ...process.env,
        ...(this.#opts.location ? { PAGEDISK_AZURITE_KEEP: "1" } : {}),
        // Azurite checks a copy's source by calling itself: over HTTPS it must trust its own certificate.
        ...(this.#opts.tls ? { NODE_EXTRA_CA_CERTS: this.#opts.tls.cert } : {}),
      },
    });
    this.#children.push(child);
    let output = "";
    let ready: () => void = () => {};
    const listening = new Promise<void>((res) => {
      ready = res;
    });
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-4096);
      // Blob says "successfully listens on", Table "successfully started on".
      if (/successfully (listens|started) on/.test(output)) ready();
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    const exited = new Promise<never>((_, reject) => {
      child.once("error", (err) =>
        reject(this.#opts.cpu === undefined ? err : new Error(`${err.message} (taskset: apt-get install util-linux)`)),
      );
      child.once("exit", (code, signal) =>
        reject(new Error(`azurite ${service} exited (${code ?? signal}):\n${output}`)),
      );
    });
    // Exiting after a successful start is what stop() does; nobody awaits it then.
    exited.catch(() => {});
    return { listening, exited };
  }
}

/**
 * A loopback port free right now (Azurite cannot take port 0 itself). Picked
 * at random below the kernel's ephemeral range, where outgoing connections
 * never take their source ports: an OS-given port could be handed to some
 * client's connect() between our probe and Azurite's bind.
 */
export async function freePort(): Promise<number> {
  const ceiling = await ephemeralLow();
  for (let i = 0; i < 64 && ceiling - PICK_FLOOR >= 1024; i++) {
    const port = PICK_FLOOR + randomInt(ceiling - PICK_FLOOR);
    if (await canListen(port)) return port;
  }
  return osPort();
}

/** Below the usual service ports (Azurite's own 10000-10002 among them). */
const PICK_FLOOR = 20_000;

/** First port of the ephemeral range; the range's usual start if unknown. */
async function ephemeralLow(): Promise<number> {
  try {
    const range = await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8");
    const low = Number(range.trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

async function canListen(port: number): Promise<boolean> {
  const srv = createServer();
  const ok = await new Promise<boolean>((res) => {
    srv.once("error", () => res(false));
    srv.listen({ port, host: HOST, exclusive: true }, () => res(true));
  });
  if (ok) {
    srv.close();
    await once(srv, "close");
  }
  return ok;
}

async function osPort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, HOST);
  await once(srv, "listening");
  const addr = srv.address();
  srv.close();
  await once(srv, "close");
  if (!addr || typeof addr === "string") throw new Error("no port from the OS");
  return addr.port;
}

/**
 * SIGINT lets Azurite save its metadata: its Table service handles only
 * SIGINT, so SIGTERM would end it unsaved (the registry lost on restart).
 * SIGKILL if it hangs.
 */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGINT");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}
