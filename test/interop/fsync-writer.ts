/**
 * An application under fsync load, as its own process (its I/O must not
 * wait on the test's event loop): in `dir`, create files one after another,
 * each written, fsynced and its directory fsynced, and print one line per
 * file once that is done: `ok <name> <sha256>`. Any error is printed as
 * `error <message>` and ends it with exit 1; SIGTERM ends it after the file
 * in progress, exit 0.
 *
 *   node fsync-writer.ts <dir> <seed>
 */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";

const [dir, seedText] = process.argv.slice(2);
if (!dir) throw new Error("usage: fsync-writer.ts <dir> <seed>");
let seed = Number(seedText ?? 1) >>> 0 || 1;
/** xorshift32: the sizes and bytes vary from run to run of the loop, reproducibly. */
function next(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
}

let stopping = false;
process.on("SIGTERM", () => {
  stopping = true;
});

const dirHandle = await open(dir, "r");
try {
  for (let i = 0; !stopping; i++) {
    const size = 4096 + 4 * Math.floor(next() * 15 * 1024);
    const data = Buffer.allocUnsafe(size);
    for (let at = 0; at < size; at += 4) data.writeUInt32LE(Math.floor(next() * 2 ** 32), at);
    const name = `f${i}`;
    const file = await open(join(dir, name), "wx");
    try {
      await file.writeFile(data);
      await file.sync();
    } finally {
      await file.close();
    }
    await dirHandle.sync();
    process.stdout.write(`ok ${name} ${createHash("sha256").update(data).digest("hex")}\n`);
  }
} catch (err) {
  process.stdout.write(`error ${(err as Error).message.replace(/\n/g, " ")}\n`);
  process.exitCode = 1;
} finally {
  await dirHandle.close();
}
