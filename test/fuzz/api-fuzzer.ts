/**
 * The API fuzzer: requests made from the OpenAPI document the control plane
 * serves, to every operation in turn, against the app in process over a
 * real Azurite (test/functions/fixture.ts). Each request starts from a
 * valid one (the right credential, inputs drawn from the document's
 * schemas) and breaks one thing: a path parameter (huge, unicode, reserved
 * or control characters, raw or percent-encoded), the query, one body
 * field's type or bounds, the whole body (empty, truncated, deeply nested,
 * megabytes, not UTF-8), the credential, or the method. Some are left
 * valid, so that the state the others meet moves.
 *
 * Counted:
 * - 5xx:              any response in the 5xx range;
 * - bad error shape:  a 4xx whose body is not `{"error":{"code","message"}}`
 *                     as JSON, or whose code is not one the contract gives
 *                     that status (429 from the rate limits is a 4xx like
 *                     any other);
 * - changed registry: a request answered 4xx that changed a table row or a
 *                     blob. Refused requests are checked a batch at a time
 *                     against a snapshot of the whole account; a batch that
 *                     changed is replayed one request at a time to find
 *                     which. Requests answered 2xx may change anything.
 * - accepted:         requests meant to be refused that were answered 2xx
 *                     (printed, not a failure: the document cannot say
 *                     which inputs a route ignores).
 */
import { ERROR_STATUS } from "../../contract/errors.ts";
import type { JoinResponse } from "../../contract/node.ts";
import type { IssuedToken } from "../../contract/token.ts";
import { DEFAULT_BODY_LIMIT_BYTES, REPORT_BODY_LIMIT_BYTES } from "../../functions/app.ts";
import { type ControlPlaneFixture, jsonOf, type StorageSnapshot } from "../functions/fixture.ts";
import { nastyString, oddBody, type Schema, validValue, wrongValue } from "./api-values.ts";
import { Random } from "./random.ts";

/** A control plane made ready for fuzzing (`prepareApiFuzz`); several runs may share one. */
export interface ApiFuzzTarget {
  fixture: ControlPlaneFixture;
  world: World;
  ops: Op[];
}

export interface ApiFuzzOptions {
  requests: number;
  seed: number;
  target: ApiFuzzTarget;
  /** Refused requests per registry snapshot (default 20). */
  batch?: number;
  /** Stand between the fuzzer and the app (self-tests answer some requests themselves). */
  around?: (request: Request, app: (request: Request) => Promise<Response>) => Promise<Response>;
  progress?: (line: string) => void;
}

export interface ApiFuzzCounts {
  tried: number;
  "5xx": number;
  "bad error shape": number;
  "changed registry": number;
}

export interface ApiFuzzReport {
  seed: number;
  counts: ApiFuzzCounts;
  accepted: number;
  /** The first few of them. */
  acceptedSamples: string[];
  /** Requests tried, by operationId: every operation of the document is there. */
  operations: Record<string, number>;
  problems: string[];
}

/** One operation of the document, as the fuzzer uses it. */
interface Op {
  id: string;
  method: string;
  /** `/api/v1/volumes/{name}` */
  path: string;
  access: "admin" | "node" | "join" | "public";
  params: { name: string; in: string; schema: Schema; required?: boolean }[];
  body?: Schema;
  /** Other methods the same path answers; a "wrong method" must not be one of them. */
  siblings: string[];
}

/** A request as data, so a batch can be replayed. */
interface Planned {
  op: Op;
  what: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  /** Made to be refused (4xx); false for valid requests and for changes a route may well ignore. */
  mustRefuse: boolean;
}

/** What the fixture holds besides what the fuzz makes. */
interface World {
  adminKey: string;
  joinToken: string;
  /** n1 owns v1; n2 owns nothing. */
  nodeCredential: string;
  otherNodeCredential: string;
  existing: string[];
}

const MAX_PROBLEMS = 20;
/** Requests that change something by design: fuzzed only with names the fixture did not make. */
const DESTRUCTIVE = /\/(detach|release|cordon|uncordon|delete-orphans)$/;

/**
 * Give a control plane with nothing in it yet what the fuzz needs: a pool,
 * a volume attached to node n1, a second node n2, a join token; and read
 * its OpenAPI document.
 */
export async function prepareApiFuzz(fixture: ControlPlaneFixture): Promise<ApiFuzzTarget> {
  const world = await populate(fixture);
  const doc = await jsonOf<{ paths: Record<string, Record<string, unknown>> }>(
    await fixture.app.request("/api/v1/openapi.json"),
    200,
  );
  return { fixture, world, ops: operationsOf(doc) };
}

/** Operations of the document, by operationId. */
export function operationIds(target: ApiFuzzTarget): string[] {
  return target.ops.map((o) => o.id);
}

export async function fuzzApi(opts: ApiFuzzOptions): Promise<ApiFuzzReport> {
  const { fixture: fx, world, ops } = opts.target;
  const root = new Random(opts.seed);
  const batch = opts.batch ?? 20;
  const app = (req: Request) => Promise.resolve(fx.app.request(req));
  const send = (p: Planned): Promise<Response> => {
    const req = new Request(`http://localhost${p.url}`, {
      method: p.method,
      headers: p.headers,
      ...(p.body === undefined ? {} : { body: p.body }),
    });
    return opts.around ? opts.around(req, app) : app(req);
  };

  const counts: ApiFuzzCounts = { tried: 0, "5xx": 0, "bad error shape": 0, "changed registry": 0 };
  const operations = Object.fromEntries(ops.map((o) => [o.id, 0]));
  const problems: string[] = [];
  const note = (line: string) => {
    if (problems.length < MAX_PROBLEMS) problems.push(line);
  };
  let accepted = 0;
  const acceptedSamples: string[] = [];

  let baseline = await fx.snapshot();
  let pending: Planned[] = [];
  let tainted = false;
  const flush = async () => {
    if (pending.length === 0 && !tainted) return;
    const now = await fx.snapshot();
    if (!same(now, baseline)) {
      const culprits: Planned[] = [];
      for (const p of pending) {
        const before = await fx.snapshot();
        const again = await send(p);
        await again.arrayBuffer();
        if (again.status >= 400 && again.status < 500 && !same(before, await fx.snapshot())) culprits.push(p);
      }
      counts["changed registry"] += culprits.length;
      for (const p of culprits) note(`${describe(p)}: refused, yet changed the registry`);
      // Without a 2xx in the batch to blame, a change nobody reproduces still counts, once.
      if (culprits.length === 0 && !tainted) {
        counts["changed registry"]++;
        note(`a batch of ${pending.length} refused requests changed the registry: ${diff(baseline, now)}`);
      }
      baseline = await fx.snapshot();
    }
    pending = [];
    tainted = false;
  };

  for (let i = 0; i < opts.requests; i++) {
    const op = ops[i % ops.length]!;
    let planned: Planned;
    try {
      planned = plan(op, root.fork(), world, ops);
    } catch (err) {
      throw new Error(`planning a request to ${op.id}: ${(err as Error).message}`);
    }
    if (!planned.mustRefuse) await flush();
    let res: Response;
    try {
      res = await send(planned);
    } catch (err) {
      // A request the Fetch API itself will not build is never sent; the plans avoid them.
      throw new Error(`${describe(planned)}: could not be sent: ${(err as Error).message}`);
    }
    counts.tried++;
    operations[op.id]!++;
    const text = await res.text();
    if (res.status >= 500) {
      counts["5xx"]++;
      tainted = true;
      note(`${describe(planned)}: ${res.status} ${text.slice(0, 200)}`);
    } else if (res.status >= 400) {
      const wrong = errorShape(res, text);
      if (wrong) {
        counts["bad error shape"]++;
        note(`${describe(planned)}: ${res.status} ${wrong}`);
      }
      pending.push(planned);
    } else if (planned.mustRefuse) {
      accepted++;
      if (acceptedSamples.length < MAX_PROBLEMS) acceptedSamples.push(`${describe(planned)}: ${res.status}`);
      tainted = true;
    } else {
      baseline = await fx.snapshot();
    }
    if (pending.length >= batch) await flush();
    if ((i + 1) % Math.max(1, Math.floor(opts.requests / 10)) === 0) {
      opts.progress?.(`api fuzz: ${i + 1}/${opts.requests} requests, ${JSON.stringify(counts)}`);
    }
  }
  await flush();
  for (const err of fx.reported.splice(0)) note(`the app reported: ${String(err)}`);
  return { seed: opts.seed, counts, accepted, acceptedSamples, operations, problems };
}

/** What is wrong with a 4xx response, or undefined. */
function errorShape(res: Response, text: string): string | undefined {
  const type = res.headers.get("content-type") ?? "";
  if (!/^application\/json\b/.test(type)) return `content type "${type}", not JSON: ${text.slice(0, 100)}`;
  let body: { error?: { code?: unknown; message?: unknown } };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    return `body is not JSON: ${text.slice(0, 100)}`;
  }
  const code = body?.error?.code;
  if (typeof code !== "string" || typeof body.error?.message !== "string") {
    return `body is not {"error":{"code","message"}}: ${text.slice(0, 100)}`;
  }
  const status = (ERROR_STATUS as Record<string, number>)[code];
  if (status !== res.status) return `code ${code} comes with ${status ?? "no status"} in the contract`;
  return undefined;
}

/** A pool, a volume attached to node n1, a second node n2, a join token. */
async function populate(fx: ControlPlaneFixture): Promise<World> {
  await fx.addPool("p1");
  await jsonOf(await fx.call("POST", "/api/v1/volumes", { name: "v1", sizeBytes: 1024 * 1024 }), 201);
  const joinToken = (await jsonOf<IssuedToken>(await fx.call("POST", "/api/v1/tokens", {}), 201)).token;
  const join = async (name: string) =>
    (await jsonOf<JoinResponse>(await fx.call("POST", "/api/v1/nodes/join", { name }, { authorization: `Bearer ${joinToken}` }), 201)).credential;
  const nodeCredential = await join("n1");
  const otherNodeCredential = await join("n2");
  await jsonOf(await fx.call("POST", "/api/v1/volumes/v1/attach", { node: "n1" }), 200);
  return { adminKey: fx.adminKey, joinToken, nodeCredential, otherNodeCredential, existing: ["v1", "p1", "n1", "n2"] };
}

function operationsOf(doc: { paths: Record<string, Record<string, unknown>> }): Op[] {
  const ops: Op[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, raw] of Object.entries(item)) {
      const op = raw as {
        operationId: string;
        security?: Record<string, unknown>[];
        parameters?: Op["params"];
        requestBody?: { content: Record<string, { schema: Schema }> };
      };
      const scheme = Object.keys(op.security?.[0] ?? {})[0];
      ops.push({
        id: op.operationId,
        method: method.toUpperCase(),
        path,
        access: scheme === "adminKey" ? "admin" : scheme === "nodeCredential" ? "node" : scheme === "joinToken" ? "join" : "public",
        params: op.parameters ?? [],
        ...(op.requestBody ? { body: op.requestBody.content["application/json"]!.schema } : {}),
        siblings: Object.keys(item).map((m) => m.toUpperCase()),
      });
    }
  }
  return ops;
}

type Mutation = "path" | "query" | "body-field" | "body" | "auth" | "method" | "content-type" | "valid";

/** One request to `op`: valid, then broken in one way. */
function plan(op: Op, r: Random, world: World, ops: readonly Op[]): Planned {
  const pathParams = op.params.filter((p) => p.in === "path");
  const queryParams = op.params.filter((p) => p.in === "query");
  const hasBody = op.body !== undefined;
  const mutation = r.weighted<Mutation>([
    ["path", pathParams.length > 0 ? 4 : 0],
    ["query", 2],
    ["body-field", hasBody ? 4 : 0],
    ["body", hasBody ? 4 : 1],
    ["auth", op.access === "public" ? 0 : 2],
    ["method", 1],
    ["content-type", hasBody ? 1 : 0],
    ["valid", 1],
  ]);
  const limit = /\/(report|heartbeat)$/.test(op.path) ? REPORT_BODY_LIMIT_BYTES : DEFAULT_BODY_LIMIT_BYTES;
  // Calls that change what the fixture made take names of the fuzz's own.
  const destructive = op.method === "DELETE" || DESTRUCTIVE.test(op.path);
  const names = destructive ? [] : world.existing;
  const pathValues = new Map<string, string>();
  for (const p of pathParams) {
    const own = op.access === "node" && p.name === "name";
    pathValues.set(p.name, encodeURIComponent(own ? "n1" : String(validValue(p.schema, r, names))));
  }
  const query: string[] = [];
  for (const p of queryParams) {
    if (p.required || r.chance(0.3)) query.push(`${p.name}=${encodeURIComponent(String(validValue(p.schema, r, names)))}`);
  }
  const bodyValue = hasBody ? validValue(op.body!, r, names) : undefined;
  let body: string | Uint8Array | undefined = hasBody ? JSON.stringify(bodyValue) : undefined;
  const headers: Record<string, string> = { "content-type": "application/json" };
  const credential = credentialFor(op.access, world);
  if (credential) headers.authorization = `Bearer ${credential}`;
  let method = op.method;
  let what: string = mutation;
  let mustRefuse = true;

  switch (mutation) {
    case "path": {
      const p = r.pick(pathParams);
      const value = nastyString(r);
      const encoding = r.pick(["raw", "encoded", "twice"] as const);
      pathValues.set(p.name, encoding === "raw" ? value : encoding === "encoded" ? encodeURIComponent(value) : encodeURIComponent(encodeURIComponent(value)));
      what = `path ${p.name}=${excerpt(value)} (${encoding})`;
      break;
    }
    case "query": {
      const p = queryParams.length > 0 && r.chance(0.7) ? r.pick(queryParams) : undefined;
      const key = p?.name ?? r.pick(["x", "name", "__proto__", "", "force", "%zz"]);
      const value = p && r.chance(0.5) ? JSON.stringify(wrongValue(p.schema, r)) : nastyString(r);
      // The first of repeated keys is the one read: no valid value may come before the bad one.
      for (let at = query.findIndex((q) => q.startsWith(`${key}=`)); at >= 0; at = query.findIndex((q) => q.startsWith(`${key}=`))) {
        query.splice(at, 1);
      }
      query.push(`${key}=${r.chance(0.5) ? value : encodeURIComponent(value)}`);
      if (r.chance(0.2)) query.push(`${key}=${encodeURIComponent(value)}`); // the same key twice
      what = `query ${excerpt(key)}=${excerpt(value)}`;
      // Routes without a query schema ignore the query, as the document allows.
      mustRefuse = queryParams.length > 0;
      break;
    }
    case "body-field": {
      const { text, where } = breakOneField(op.body!, bodyValue, r);
      body = text;
      what = `body ${where}`;
      break;
    }
    case "body": {
      const odd = oddBody(r, body ?? "{}", limit);
      body = odd.text;
      what = `body: ${odd.what}`;
      // Padding a valid body up to the limit leaves it valid; operations without a body ignore one.
      const stillValid =
        odd.what.includes("valid") || (odd.what.includes("around the limit") && Buffer.byteLength(odd.text) <= limit);
      mustRefuse = hasBody && !stillValid;
      break;
    }
    case "auth": {
      const other = op.access === "admin" ? world.nodeCredential : world.adminKey;
      const variants: [string | undefined, string][] = [
        [undefined, "no credential"],
        ["Bearer", "Bearer and nothing"],
        ["Bearer ", "Bearer and a space"],
        ["Basic dXNlcjpwYXNz", "Basic"],
        [`Bearer ${credential} extra`, "two words"],
        [`Bearer ${"a".repeat(r.pick([100, 10_000, 100_000]))}`, "a huge credential"],
        [`Bearer pdn_n1_${"0".repeat(43)}`, "a node credential with a wrong secret"],
        [`Bearer pdn_${r.pick(["", "_", "..", "n1", "%00"])}_x`, "a malformed node credential"],
        ["Bearer pdj_garbage", "a malformed join token"],
        ["Bearer pdk_garbage", "a wrong admin key"],
        [`Bearer ${world.otherNodeCredential}`, "another node's credential"],
        [`Bearer ${other}`, "a credential of the wrong kind"],
      ];
      const [value, label] = r.pick(variants);
      if (value === undefined) delete headers.authorization;
      else headers.authorization = value;
      what = `auth: ${label}`;
      // n2 on an admin or join endpoint is refused; on n1's own endpoints as well.
      break;
    }
    case "method": {
      const choices = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"].filter((m) => !op.siblings.includes(m));
      method = r.pick(choices);
      what = `method ${method}`;
      // Another operation may live at a path that looks the same (a name that is a literal elsewhere).
      mustRefuse = !ops.some((o) => o.method === method && sameShape(o.path, op.path));
      break;
    }
    case "content-type": {
      const type = r.pick([undefined, "text/plain", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "application/x-www-form-urlencoded"]);
      if (type === undefined) delete headers["content-type"];
      else headers["content-type"] = type;
      what = `content type ${type ?? "none"}`;
      mustRefuse = false;
      break;
    }
    case "valid":
      mustRefuse = false;
      break;
  }
  if (method === "GET" || method === "HEAD") body = undefined;
  let url = op.path.replace(/\{([^}]+)\}/g, (_, name: string) => pathValues.get(name) ?? "x");
  if (query.length > 0) url += `?${query.join("&")}`;
  return { op, what, method, url, headers, ...(body === undefined ? {} : { body }), mustRefuse };
}

function credentialFor(access: Op["access"], world: World): string | undefined {
  switch (access) {
    case "admin":
      return world.adminKey;
    case "node":
      return world.nodeCredential;
    case "join":
      return world.joinToken;
    case "public":
      return undefined;
  }
}

/** The valid body with one field given a wrong value, dropped, or joined by one the schema does not know. */
function breakOneField(schema: Schema, value: unknown, r: Random): { text: string; where: string } {
  const copy = structuredClone(value) as Record<string, unknown>;
  // Walk down to a random object within the body, keeping its schema.
  let node: Record<string, unknown> = copy;
  let nodeSchema = schema;
  let where = "";
  for (let depth = 0; depth < 4; depth++) {
    const keys = Object.keys(node).filter((k) => {
      const s = nodeSchema.properties?.[k];
      return s?.type === "object" || (s?.type === "array" && Array.isArray(node[k]) && (node[k] as unknown[]).length > 0 && s.items?.type === "object");
    });
    if (keys.length === 0 || r.chance(0.5)) break;
    const key = r.pick(keys);
    const s = nodeSchema.properties![key]!;
    if (s.type === "array") {
      node = (node[key] as Record<string, unknown>[])[0]!;
      nodeSchema = s.items!;
      where += `${key}[0].`;
    } else {
      node = node[key] as Record<string, unknown>;
      nodeSchema = s;
      where += `${key}.`;
    }
  }
  const props = Object.keys(nodeSchema.properties ?? {});
  const how = r.weighted([
    ["wrong", props.length > 0 ? 6 : 0],
    ["drop", (nodeSchema.required ?? []).length > 0 ? 2 : 0],
    ["extra", nodeSchema.additionalProperties === false ? 2 : 0],
    ["whole", 1],
  ] as const);
  if (how === "wrong") {
    const key = r.pick(props);
    node[key] = wrongValue(nodeSchema.properties![key]!, r);
    return { text: JSON.stringify(copy), where: `${where}${key}=${excerpt(JSON.stringify(node[key]) ?? "")}` };
  }
  if (how === "drop") {
    const key = r.pick(nodeSchema.required!);
    delete node[key];
    return { text: JSON.stringify(copy), where: `${where}${key} missing` };
  }
  if (how === "extra") {
    node[r.pick(["extra", "PartitionKey", "etag", "admin", "constructor"])] = 1;
    return { text: JSON.stringify(copy), where: `${where}unknown field` };
  }
  return { text: JSON.stringify(wrongValue(schema, r)), where: "of the wrong type" };
}

/** Two document paths a URL could match both of: same segments, `{param}` matching anything. */
function sameShape(a: string, b: string): boolean {
  const x = a.split("/");
  const y = b.split("/");
  return x.length === y.length && x.every((s, i) => s === y[i] || s.startsWith("{") || y[i]!.startsWith("{"));
}

function same(a: StorageSnapshot, b: StorageSnapshot): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The rows and blobs that differ, for the report. */
function diff(a: StorageSnapshot, b: StorageSnapshot): string {
  const lines = (s: StorageSnapshot) =>
    new Set([
      ...Object.entries(s.tables).flatMap(([t, rows]) => rows.map((row) => `table ${t}: ${row}`)),
      ...Object.entries(s.containers).flatMap(([c, blobs]) => blobs.map((blob) => `container ${c}: ${blob}`)),
    ]);
  const before = lines(a);
  const after = lines(b);
  const gone = [...before].filter((l) => !after.has(l)).map((l) => `- ${l}`);
  const added = [...after].filter((l) => !before.has(l)).map((l) => `+ ${l}`);
  return [...gone, ...added].slice(0, 6).join("; ");
}

function describe(p: Planned): string {
  return `${p.op.id} (${p.what}): ${p.method} ${excerpt(p.url, 160)}`;
}

function excerpt(text: string, n = 40): string {
  const shown = JSON.stringify(text.length > n ? `${text.slice(0, n)}…(${text.length} chars)` : text);
  return shown.slice(1, -1);
}
