/**
 * `npm start`: the local stack. Azurite (blobs and tables, data under
 * .pagedisk/azurite), the control plane on http://127.0.0.1:7071 with the
 * Azurite account registered as pool `local`, and one page blob volume
 * served over NBD by the bundled `pagedisk serve`. Restarting keeps all
 * state. Ctrl-C stops everything cleanly.
 *
 * The agent daemon (issue 4) will replace the standalone `serve`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { BlobServiceClient } from "@azure/storage-blob";
import { startLocalControlPlane } from "../functions/local.ts";
import { type Azurite, startAzurite } from "../test/harness/azurite.ts";

const ROOT = resolve(import.meta.dirname, "..");
const STATE = join(ROOT, ".pagedisk");
const BLOB_PORT = Number(process.env.PAGEDISK_AZURITE_PORT ?? 10000);
const SOCKET = join(STATE, "demo.sock");

const children: ChildProcess[] = [];

let stopping = false;
/** Filled in once the control plane runs, so stop() can close it. */
const running: { controlPlane?: { close(): Promise<void> }; azurite?: Azurite } = {};
async function stop(code: number): Promise<never> {
  stopping = true;
  await running.controlPlane?.close().catch(() => {});
  for (const child of children.reverse()) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  }
  await running.azurite?.stop();
  process.exit(code);
}

await mkdir(STATE, { recursive: true });
// Azurite keeps its data in .pagedisk/azurite across restarts.
const azurite = await startAzurite({
  table: true,
  location: join(STATE, "azurite"),
  blobPort: BLOB_PORT,
  tablePort: BLOB_PORT + 2,
}).catch((err: Error) => {
  console.error(`Azurite did not start (is port ${BLOB_PORT} taken? PAGEDISK_AZURITE_PORT): ${err.message}`);
  process.exit(1);
});
running.azurite = azurite;
const BLOB_ENDPOINT = azurite.blobEndpoint;
const CONNECTION_STRING = azurite.connectionString;

// The control plane, with the same Azurite account as registry and as pool `local`.
const controlPlane = await startLocalControlPlane({
  connectionString: CONNECTION_STRING,
  stateDir: STATE,
  log: (line) => console.log(line),
});
running.controlPlane = controlPlane;
const registered = await fetch(`${controlPlane.apiUrl}/pools`, {
  method: "POST",
  headers: { authorization: `Bearer ${controlPlane.adminKey}`, "content-type": "application/json" },
  body: JSON.stringify({ name: "local", auth: { kind: "connectionString", connectionString: CONNECTION_STRING } }),
});
if (registered.status !== 201 && registered.status !== 409) {
  console.error(`registering pool local failed: ${registered.status} ${await registered.text()}`);
  await stop(1);
}
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
  control plane          ${controlPlane.apiUrl}  (admin key in .pagedisk/local.json)
  API document           ${controlPlane.apiUrl}/openapi.json
  pool                   local (the Azurite account, container pagedisk)
  Azurite                ${BLOB_ENDPOINT}, ${azurite.tableEndpoint}
  volume                 volumes/demo.vhd, 1 GiB, served over NBD by pagedisk serve
  log                    .pagedisk/serve.log

Try it:
  nbdinfo '${uri}'
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' '${uri}'
  nbdinfo --map '${uri}'
  curl -s -H "authorization: Bearer $(node -p 'require("./.pagedisk/local.json").adminKey')" ${controlPlane.apiUrl}/pools
`);
});

process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));
