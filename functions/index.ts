/**
 * Azure Functions entry (Node.js v4 programming model): one HTTP trigger
 * that hands every request below `/api` to the Hono app, and the sweeper's
 * timer. Nothing else; this is the only file that imports `@azure/functions`.
 *
 * The runtime is built on the first invocation, not at import, so that a
 * missing setting fails that invocation with its name instead of the whole
 * worker; a failed build is retried by the next invocation. Building it
 * installs the keys that seal pool connection strings before anything reads
 * the registry, then seals the rows not yet sealed under the current key
 * (written before sealing existed, or under a previous key); a row it cannot
 * seal is reported and left as it is. Pools with account keys are refused
 * here unless PAGEDISK_POOL_ACCOUNT_KEYS=allow (settings.ts).
 */
import {
  app,
  type HttpRequest,
  type HttpResponseInit,
  type InvocationContext,
  type Timer,
} from "@azure/functions";
import { SWEEP_SCHEDULE, sweep } from "./health/sweep.ts";
import { forwardTo } from "./http/functions-adapter.ts";
import { sealPoolRows } from "./registry/pools.ts";
import { useSealingKeys } from "./registry/sealing-keys.ts";
import { openRuntime, type Runtime } from "./runtime.ts";
import { settingsFrom } from "./settings.ts";

/** The timer's schedule (health/sweep.ts says why this one). */
export { SWEEP_SCHEDULE };

let runtime: Promise<Runtime> | undefined;

function ready(): Promise<Runtime> {
  runtime ??= start().catch((err: unknown) => {
    runtime = undefined;
    throw err;
  });
  return runtime;
}

async function start(): Promise<Runtime> {
  const settings = settingsFrom(process.env);
  useSealingKeys(settings.sealingKeys);
  const opened = await openRuntime(settings, { poolAccountKeys: settings.poolAccountKeys });
  const { failed } = await sealPoolRows(opened.cp.registry);
  for (const { error } of failed) opened.cp.report(error);
  return opened;
}

const forward = forwardTo(async (request) => (await ready()).app.fetch(request));

/** The HTTP trigger: `/api/{*path}`, every method, authenticated by the app itself. */
export function httpTrigger(
  request: HttpRequest,
  _context: InvocationContext,
): Promise<HttpResponseInit> {
  return forward(request);
}

/** The timer trigger: one sweep. */
export async function sweepTrigger(_timer: Timer, context: InvocationContext): Promise<void> {
  const { cp, settings } = await ready();
  const report = await sweep(cp, settings.sweep);
  // Quiet passes log nothing; a pass that moved something, or judged nobody and says why, does.
  const { path, ...moved } = report;
  if (path !== undefined || Object.values(moved).some((names) => names.length > 0)) context.log(report);
}

// Bodies stream through to the app, whose body limit then bounds what is read.
app.setup({ enableHttpStream: true });

app.http("api", {
  route: "{*path}",
  methods: ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
  authLevel: "anonymous",
  handler: httpTrigger,
});

app.timer("sweep", { schedule: SWEEP_SCHEDULE, runOnStartup: false, handler: sweepTrigger });
