/**
 * A stand-in agent process for the kill -9 test: binds one volume with the
 * real binder, prints the binding as one JSON line, and waits to be killed.
 *
 *   node bind-and-hold.ts <stateDir> <bind request as JSON>
 */
import { openBinder } from "../../agent/host/open-binder.ts";
import { createLogger } from "../../agent/log.ts";

const [stateDir, requestJson] = process.argv.slice(2);
if (!stateDir || !requestJson) throw new Error("usage: bind-and-hold.ts <stateDir> <request JSON>");
const binder = await openBinder({ stateDir, mode: "fuse", log: createLogger({ level: "silent" }) });
const binding = await binder.bind(JSON.parse(requestJson));
process.stdout.write(`${JSON.stringify(binding)}\n`);
// Held open until SIGKILL, as a running agent would be.
setInterval(() => {}, 1 << 30);
