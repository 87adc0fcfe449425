/**
 * Raw page blob rates against Azurite with our client (not a test, no
 * assertions): Put Page / Get Blob of 4 KiB at concurrency 32 and of 1 MiB
 * at concurrency 8, closed loop for a few seconds each.
 *
 * With --null, Put Page also goes to a do-nothing HTTP server in another
 * process, which shows the client's own ceiling.
 *
 *   npx node bench/pageblob-client.ts [seconds] [--in-memory] [--null]
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { BlobServiceClient } from "@azure/storage-blob";
import { openPageBlob } from "../agent/pageblob/connect.ts";
import type { PageBlob } from "../agent/pageblob/page-blob.ts";
import { startAzurite } from "../test/harness/azurite.ts";
import { closedLoop } from "./closed-loop.ts";

const seconds = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 5);
const inMemory = process.argv.includes("--in-memory");
const nullServer = process.argv.includes("--null");
const SIZE = 1 << 30;

async function run(
  label: string,
  concurrency: number,
  bytes: number,
  op: (pb: PageBlob, offset: number, buf: Buffer) => Promise<unknown>,
  pb: PageBlob,
) {
  const buf = Buffer.alloc(bytes, 0xa5);
  const slots = SIZE / bytes;
  const t0 = performance.now();
  const done = await closedLoop(concurrency, seconds, (n) => op(pb, (n % slots) * bytes, buf));
  const s = (performance.now() - t0) / 1000;
  const rate = done / s;
  console.log(
    `${label.padEnd(28)} qd=${String(concurrency).padStart(2)}  ${rate.toFixed(0).padStart(6)} req/s  ${((rate * bytes) / 2 ** 20).toFixed(1).padStart(7)} MiB/s`,
  );
}

const az = await startAzurite({ inMemory });
try {
  await BlobServiceClient.fromConnectionString(az.connectionString)
    .getContainerClient("bench")
    .create();
  const pb = openPageBlob("bench/disk", { connectionString: az.connectionString, connections: 32 });
  await pb.create(SIZE);
  console.log(
    `Azurite ${inMemory ? "in memory" : "on disk"}, ${seconds} s per run, sequential offsets`,
  );
  await run("Put Page 4 KiB", 32, 4096, (p, o, b) => p.putPages(o, b), pb);
  await run("Get Blob 4 KiB", 32, 4096, (p, o) => p.read(o, 4096), pb);
  await run("Put Page 1 MiB", 8, 1 << 20, (p, o, b) => p.putPages(o, b), pb);
  await run("Get Blob 1 MiB", 8, 1 << 20, (p, o) => p.read(o, 1 << 20), pb);
  await run("Put Page 4 MiB", 8, 4 << 20, (p, o, b) => p.putPages(o, b), pb);
  await pb.close();
} finally {
  await az.dispose();
}

if (nullServer) {
  // Answers every request with 201 after reading its body, as fast as node:http can.
  // A GET gets as many zero bytes as its x-ms-range asks for.
  const code = `const z = Buffer.alloc(4 << 20); require("node:http").createServer((q, r) => { q.resume(); q.on("end", () => {
    const m = /bytes=(\\d+)-(\\d+)/.exec(q.headers["x-ms-range"] ?? "");
    if (q.method !== "GET" || !m) { r.writeHead(201, { "content-length": 0 }); r.end(); return; }
    const n = Number(m[2]) - Number(m[1]) + 1;
    r.writeHead(206, { "content-length": n, "content-range": "bytes " + m[1] + "-" + m[2] + "/1073741824" }); r.end(z.subarray(0, n)); });
  }).listen(0, "127.0.0.1", function () { console.log(this.address().port); });`;
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  const url = `http://127.0.0.1:${line.toString().trim()}/devstoreaccount1/bench/disk?sv=x&sig=y`;
  const pb = openPageBlob(url, { connections: 32 });
  console.log("null server (client ceiling)");
  await run("Put Page 4 KiB", 32, 4096, (p, o, b) => p.putPages(o, b), pb);
  await run("Get Blob 4 KiB", 32, 4096, (p, o) => p.read(o, 4096), pb);
  await run("Put Page 1 MiB", 8, 1 << 20, (p, o, b) => p.putPages(o, b), pb);
  await run("Get Blob 1 MiB", 8, 1 << 20, (p, o) => p.read(o, 1 << 20), pb);
  await pb.close();
  child.kill();
}
