/**
 * The Azure Functions Node.js worker's half of an app, enough to load an
 * unpacked deployment package and invoke its functions outside Azure. The
 * host and its worker do not run here, so this child process does what they
 * do, through the same seams:
 *
 * - `require("@azure/functions-core")` answers with the worker's API, as the
 *   worker's `setupCoreModule` arranges; without it `@azure/functions` runs
 *   in "test mode" and registers nothing.
 * - The app is the file `package.json` `"main"` names, imported with the app
 *   folder as working directory.
 * - The programming model the app installed is asked for its capabilities
 *   (with HTTP streaming on, that starts the library's HTTP proxy), then
 *   each invocation goes through its invocation model: arguments, handler,
 *   response. HTTP requests reach the proxy as the host sends them, with the
 *   invocation id, forwarded host and protocol, and the headers and route
 *   parameters in the trigger metadata.
 *
 * Usage: `node functions-host.ts <app dir> <plan JSON>`; prints one JSON
 * `HostReport` on stdout and exits.
 */
import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import Module from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

/** What to invoke. */
export interface HostPlan {
  /** The public host name clients used, as the host forwards it. */
  publicHost: string;
  http: { method: string; path: string; headers?: Record<string, string> }[];
  /** How many times to invoke each timer function. */
  timerRuns: number;
}

/** A binding as the library registers it (`toCoreFunctionMetadata`). */
export interface RegisteredBinding {
  type: string;
  direction: "in" | "out";
  [option: string]: unknown;
}

export interface HostReport {
  main: string;
  functions: { name: string; bindings: Record<string, RegisteredBinding> }[];
  http: {
    status: number;
    headers: Record<string, string>;
    sha256: string;
    /** The body, when it is text of modest size. */
    text?: string;
  }[];
  /** Per timer run: "ok" or the error message. */
  timers: string[];
  /** System and user log lines of error level. */
  errors: string[];
}

interface FunctionMetadata {
  name: string;
  bindings: Record<string, RegisteredBinding>;
}
type Callback = (...args: unknown[]) => unknown;
interface InvocationModel {
  getArguments(): Promise<{ context: unknown; inputs: unknown[] }>;
  invokeFunction(context: unknown, inputs: unknown[], handler: Callback): Promise<unknown>;
  getResponse(context: unknown, result: unknown): Promise<unknown>;
}
interface ProgrammingModel {
  getInvocationModel(coreContext: unknown): InvocationModel;
  getCapabilities(capabilities: Record<string, string>): Promise<Record<string, string>>;
}

const [appDir, planText] = process.argv.slice(2);
if (!appDir || !planText) throw new Error("usage: functions-host.ts <app dir> <plan JSON>");
const plan = JSON.parse(planText) as HostPlan;
const { publicHost } = plan;

const registered: { metadata: FunctionMetadata; callback: Callback }[] = [];
const errors: string[] = [];
let programmingModel: ProgrammingModel | undefined;

function log(level: string, category: string, message: string): void {
  if (level === "error" || level === "critical") errors.push(`${category}: ${message}`);
}

/** The worker's API as the library uses it; the versions are only reported, never checked. */
const coreApi = {
  version: "3.10.1",
  hostVersion: "4.1040.0",
  setProgrammingModel(model: ProgrammingModel) {
    programmingModel = model;
  },
  getProgrammingModel: () => programmingModel,
  registerFunction(metadata: FunctionMetadata, callback: Callback) {
    registered.push({ metadata, callback });
    return { dispose() {} };
  },
  registerHook: () => ({ dispose() {} }),
  log,
};

Module.prototype.require = new Proxy(Module.prototype.require, {
  apply(target, self, args: [string]) {
    return args[0] === "@azure/functions-core" ? coreApi : Reflect.apply(target, self, args);
  },
});

process.chdir(appDir);
const main = (JSON.parse(readFileSync("package.json", "utf8")) as { main: string }).main;
await import(pathToFileURL(join(process.cwd(), main)).href);
if (!programmingModel) throw new Error(`${main} installed no programming model`);
const model = programmingModel;
const capabilities = await model.getCapabilities({});
const proxy = capabilities.HttpUri;

function triggerOf(metadata: FunctionMetadata): [string, RegisteredBinding] {
  const found = Object.entries(metadata.bindings).find(([, b]) => /trigger$/i.test(b.type));
  if (!found) throw new Error(`function ${metadata.name} has no trigger`);
  return found;
}

function ofType(type: string) {
  return registered.filter(({ metadata }) => triggerOf(metadata)[1].type === type);
}

/** One call through the invocation model, as the worker makes it. */
async function invoke(
  metadata: FunctionMetadata,
  callback: Callback,
  invocationId: string,
  request: { inputData: { name: string; data: unknown }[]; triggerMetadata: unknown },
): Promise<void> {
  const invocation = model.getInvocationModel({
    invocationId,
    metadata,
    request: { invocationId, functionId: metadata.name, ...request },
    state: undefined,
    log,
  });
  const { context, inputs } = await invocation.getArguments();
  const result = await invocation.invokeFunction(context, inputs, callback);
  await invocation.getResponse(context, result);
}

const report: HostReport = {
  main,
  functions: registered.map(({ metadata }) => ({
    name: metadata.name,
    bindings: metadata.bindings,
  })),
  http: [],
  timers: [],
  errors,
};

const [http] = ofType("httpTrigger");
for (const call of plan.http) {
  if (!http || !proxy) throw new Error("no HTTP trigger, or no HTTP proxy to reach it");
  const [bindingName] = triggerOf(http.metadata);
  const invocationId = randomUUID();
  const headers = { host: publicHost, ...call.headers };
  // The response arrives once the invocation model sends it through the proxy.
  const answer = fetch(new URL(call.path, proxy), {
    method: call.method,
    headers: {
      "x-ms-invocation-id": invocationId,
      "x-forwarded-host": publicHost,
      "x-forwarded-proto": "https",
    },
  });
  await invoke(http.metadata, http.callback, invocationId, {
    inputData: [{ name: bindingName, data: { http: {} } }],
    triggerMetadata: {
      Headers: { json: JSON.stringify(headers) },
      path: { string: call.path.replace(/^\/api\//, "") },
    },
  });
  const response = await answer;
  const body = Buffer.from(await response.arrayBuffer());
  const type = response.headers.get("content-type") ?? "";
  report.http.push({
    status: response.status,
    headers: Object.fromEntries(response.headers),
    sha256: createHash("sha256").update(body).digest("hex"),
    ...(/^(text\/x-shellscript|application\/json)/.test(type) ? { text: body.toString() } : {}),
  });
}

for (const timer of ofType("timerTrigger")) {
  const [bindingName] = triggerOf(timer.metadata);
  for (let run = 0; run < plan.timerRuns; run++) {
    const timerInfo = { Schedule: { AdjustForDST: true }, ScheduleStatus: null, IsPastDue: false };
    try {
      await invoke(timer.metadata, timer.callback, randomUUID(), {
        inputData: [{ name: bindingName, data: { json: JSON.stringify(timerInfo) } }],
        triggerMetadata: {},
      });
      report.timers.push("ok");
    } catch (err) {
      report.timers.push((err as Error).message);
    }
  }
}

// The library's HTTP proxy keeps listening; the host would keep the worker, we are done once the
// report is out: exiting before a large write to the pipe has drained would cut it short.
process.stdout.write(JSON.stringify(report), () => process.exit(0));
