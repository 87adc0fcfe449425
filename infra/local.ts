/**
 * `npm start`: the local stack. Azurite (data under .pagedisk/azurite) and
 * one page blob volume served over NBD by the bundled `pagedisk serve`.
 * Restarting keeps the data. Ctrl-C stops everything cleanly.
 *
 * The control plane and the agent daemon (issues 3 and 4) will join this
 * stack; until then it is the block path alone.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { BlobServiceClient } from "@azure/storage-blob";

const ROOT = resolve(import.meta.dirname, "..");
const STATE = join(ROOT, ".pagedisk");
const BLOB_PORT = Number(process.env.PAGEDISK_AZURITE_PORT ?? 10000);
const ACCOUNT = "devstoreaccount1";
const KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const BLOB_ENDPOINT = `http://127.0.0.1:${BLOB_PORT}/${ACCOUNT}`;
const CONNECTION_STRING = `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${KEY};BlobEndpoint=${BLOB_ENDPOINT};`;
const SOCKET = join(STATE, "demo.sock");

const children: ChildProcess[] = [];

function azurite(): ChildProcess {
  const pkg = dirname(createRequire(import.meta.url).resolve("azurite/package.json"));
  const log = createWriteStream(join(STATE, "azurite.log"), { flags: "a" });
  const child = spawn(
    process.execPath,
    [
      join(pkg, "dist/src/blob/main.js"),
      "--blobHost",
      "127.0.0.1",
      "--blobPort",
      String(BLOB_PORT),
      "--location",
      join(STATE, "azurite"),
      "--disableTelemetry",
      "--skipApiVersionCheck",
      "--loose",
    ],
    // Own process group: a terminal's Ctrl-C reaches only this script, which
    // then stops the children in order, each exactly once.
    { stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  child.on("exit", (code) => {
    if (!stopping) {
      console.error(`azurite exited (${code}); see .pagedisk/azurite.log`);
      void stop(1);
    }
  });
  return child;
}

async function untilAnswering(url: string, probes = 200): Promise<void> {
  for (let i = 0; i < probes; i++) {
    try {
      await fetch(url);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`Azurite did not answer at ${url}; is port ${BLOB_PORT} taken? (PAGEDISK_AZURITE_PORT)`);
}

let stopping = false;
async function stop(code: number): Promise<never> {
  stopping = true;
  for (const child of children.reverse()) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  }
  process.exit(code);
}

await mkdir(STATE, { recursive: true });
children.push(azurite());
await untilAnswering(`${BLOB_ENDPOINT}?comp=list`);
const volumes = BlobServiceClient.fromConnectionString(CONNECTION_STRING).getContainerClient("volumes");
await volumes.createIfNotExists();
// The local stack is the demo volume's only writer: a lease left by a stack
// that was killed hard is ours, so break it rather than refuse to start.
const demo = volumes.getPageBlobClient("demo.vhd");
if (await demo.exists()) {
  const props = await demo.getProperties();
  if (props.leaseState === "leased") {
    await demo.getBlobLeaseClient().breakLease(0);
    console.log("note: broke a lease on volumes/demo.vhd left by an earlier run");
  }
}

const serve = spawn(
  process.execPath,
  [
    join(ROOT, "dist/pagedisk.mjs"),
    "serve",
    `${BLOB_ENDPOINT}/volumes/demo.vhd`,
    "--create",
    "--size",
    "1GiB",
    "--export-name",
    "demo",
    "--listen",
    `unix:${SOCKET}`,
  ],
  {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    env: { ...process.env, PAGEDISK_STORAGE_CONNECTION_STRING: CONNECTION_STRING },
  },
);
children.push(serve);
serve.stderr!.pipe(createWriteStream(join(STATE, "serve.log"), { flags: "a" }));
serve.on("exit", (code) => {
  if (!stopping) {
    console.error(`pagedisk serve exited (${code}); see .pagedisk/serve.log`);
    void stop(1);
  }
});

const uri = `nbd+unix:///demo?socket=${SOCKET}`;
createInterface({ input: serve.stdout! }).once("line", (line) => {
  console.log(line);
  console.log(`
pagedisk local stack is up (Ctrl-C stops it; data stays in .pagedisk/).
  Azurite blob endpoint  ${BLOB_ENDPOINT}
  volume                 volumes/demo.vhd, 1 GiB, served over NBD
  logs                   .pagedisk/serve.log, .pagedisk/azurite.log

Try it:
  nbdinfo '${uri}'
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' '${uri}'
  nbdinfo --map '${uri}'
`);
});

process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));
