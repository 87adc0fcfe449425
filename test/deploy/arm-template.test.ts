/**
 * bicep/azuredeploy.json is written by hand where `az bicep build` would
 * make it (no Bicep compiler installs here): these checks hold it to what
 * ARM accepts and to main.bicep. Every expression's parameters and variables
 * exist and every parameter is used; the resources (type and apiVersion,
 * conditions included), parameters and outputs are those main.bicep
 * declares, and each parameter has the same default, bounds and
 * description; the app settings are ones the control plane or the Functions
 * host reads, and none that the Flex Consumption plan refuses. Then what the
 * deployment promises: shared key access on the liveness account only, whose
 * key reaches the app as one setting and nowhere else, and the scale settings
 * the README's sizing rests on.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const BICEP_DIR = join(import.meta.dirname, "..", "..", "bicep");
const bicep = readFileSync(join(BICEP_DIR, "main.bicep"), "utf8");
const template = JSON.parse(readFileSync(join(BICEP_DIR, "azuredeploy.json"), "utf8")) as Template;
const settingsSource = readFileSync(
  join(import.meta.dirname, "..", "..", "functions", "settings.ts"),
  "utf8",
);

interface Resource {
  type: string;
  apiVersion: string;
  name: string;
  condition?: string;
  dependsOn?: string[];
  properties?: Record<string, unknown>;
  resources?: Resource[];
}
interface Parameter {
  type: string;
  defaultValue?: unknown;
  minValue?: number;
  maxValue?: number;
  minLength?: number;
  maxLength?: number;
  allowedValues?: unknown[];
  metadata?: { description?: string };
}
interface Template {
  $schema: string;
  contentVersion: string;
  parameters: Record<string, Parameter>;
  variables: Record<string, unknown>;
  resources: Resource[];
  outputs: Record<string, { type: string; value: unknown }>;
}

/** Every string in `value`, however deep. */
function strings(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(strings);
  if (value && typeof value === "object") return Object.values(value).flatMap(strings);
  return [];
}

/** ARM expressions: `[...]`, but not the `[[` escape of a literal bracket. */
function expressions(value: unknown): string[] {
  return strings(value).filter((s) => s.startsWith("[") && s.endsWith("]") && !s.startsWith("[["));
}

function referenced(kind: "parameters" | "variables", value: unknown): string[] {
  const pattern = new RegExp(`\\b${kind}\\('([^']+)'\\)`, "g");
  return expressions(value).flatMap((e) => [...e.matchAll(pattern)].map((m) => m[1]!));
}

function allResources(resources: Resource[]): Resource[] {
  return resources.flatMap((r) => [r, ...allResources(r.resources ?? [])]);
}

/** `resource <name> '<type>@<apiVersion>' = [if (...)] {` declarations of main.bicep. */
const bicepResources = [
  ...bicep.matchAll(/^resource\s+(\w+)\s+'([^'@]+)@([^']+)'\s*=\s*(if\s*\()?/gm),
].map((m) => ({ symbol: m[1]!, type: m[2]!, apiVersion: m[3]!, conditional: m[4] !== undefined }));
const bicepParams = [...bicep.matchAll(/^param\s+(\w+)\s/gm)].map((m) => m[1]!);

/** A Bicep literal as ARM writes it: numbers, booleans and '...' strings; else the text itself. */
function bicepLiteral(text: string): unknown {
  const t = text.trim();
  if (/^-?\d+$/.test(t)) return Number(t);
  if (t === "true" || t === "false") return t === "true";
  const quoted = /^'((?:[^'\\]|\\.)*)'$/.exec(t);
  return quoted ? quoted[1]!.replace(/\\(.)/g, "$1") : t;
}

/**
 * Each `param` of main.bicep with the decorators above it, as ARM would
 * write it: default (literal defaults only), bounds, allowed values,
 * description.
 */
function bicepParameter(name: string): Parameter & { declared: string } {
  const lines = bicep.split("\n");
  const at = lines.findIndex((l) => new RegExp(`^param\\s+${name}\\s`).test(l));
  const declaration = /^param\s+\w+\s+(\w+)(?:\s*=\s*(.+))?$/.exec(lines[at]!)!;
  let start = at;
  while (start > 0 && /^(@|\s+|\])/.test(lines[start - 1]!) && lines[start - 1]!.trim() !== "") start--;
  const decorators = lines.slice(start, at).join("\n");
  const param: Parameter & { declared: string } = { type: declaration[1]!, declared: decorators };
  if (declaration[2] !== undefined) param.defaultValue = bicepLiteral(declaration[2]);
  for (const key of ["minValue", "maxValue", "minLength", "maxLength"] as const) {
    const m = new RegExp(`@${key}\\((\\d+)\\)`).exec(decorators);
    if (m) param[key] = Number(m[1]);
  }
  const allowed = /@allowed\(\[([\s\S]*?)\]\)/.exec(decorators);
  if (allowed) {
    param.allowedValues = allowed[1]!
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "")
      .map(bicepLiteral);
  }
  const description = /@description\('((?:[^'\\]|\\.)*)'\)/.exec(decorators);
  if (description) param.metadata = { description: description[1]!.replace(/\\(.)/g, "$1") };
  return param;
}
const bicepOutputs = [...bicep.matchAll(/^output\s+(\w+)\s/gm)].map((m) => m[1]!);
const armResources = allResources(template.resources);

const sorted = (list: string[]) => list.slice().sort();

describe("azuredeploy.json as an ARM template", () => {
  it("has the deployment template schema and a contentVersion", () => {
    expect(template.$schema).toMatch(
      /^https:\/\/schema\.management\.azure\.com\/schemas\/\d{4}-\d{2}-\d{2}\/deploymentTemplate\.json#$/,
    );
    expect(template.contentVersion).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  });

  it("refers only to parameters and variables it defines", () => {
    const params = referenced("parameters", template);
    const vars = referenced("variables", template);
    expect(params.length).toBeGreaterThan(0);
    expect(vars.length).toBeGreaterThan(0);
    expect(params.filter((p) => !(p in template.parameters))).toEqual([]);
    expect(vars.filter((v) => !(v in template.variables))).toEqual([]);
  });

  it("uses every parameter in an expression", () => {
    const used = new Set(referenced("parameters", template));
    expect(Object.keys(template.parameters).length).toBeGreaterThan(0);
    expect(Object.keys(template.parameters).filter((p) => !used.has(p))).toEqual([]);
  });

  it("uses every variable in an expression", () => {
    const used = new Set(referenced("variables", template));
    expect(Object.keys(template.variables).filter((v) => !used.has(v))).toEqual([]);
  });

  it("depends only on resources it declares", () => {
    const declared = new Set(armResources.map((r) => r.type.toLowerCase()));
    const targets = armResources
      .flatMap((r) => r.dependsOn ?? [])
      .map((d) => /resourceId\('([^']+)'/.exec(d)?.[1]);
    expect(targets.length).toBeGreaterThan(0);
    expect(targets.filter((t) => t === undefined || !declared.has(t.toLowerCase()))).toEqual([]);
  });
});

describe("azuredeploy.json against main.bicep", () => {
  it("declares the same resources with the same apiVersions", () => {
    expect(bicepResources.length).toBeGreaterThan(5);
    expect(sorted(armResources.map((r) => `${r.type}@${r.apiVersion}`))).toEqual(
      sorted(bicepResources.map((r) => `${r.type}@${r.apiVersion}`)),
    );
  });

  it("makes the same resources conditional", () => {
    const conditional = (list: { type: string; conditional: boolean }[]) =>
      sorted(list.filter((r) => r.conditional).map((r) => r.type));
    expect(conditional(bicepResources).length).toBeGreaterThan(0);
    expect(
      conditional(armResources.map((r) => ({ type: r.type, conditional: r.condition !== undefined }))),
    ).toEqual(conditional(bicepResources));
  });

  it("has the same parameters", () => {
    expect(bicepParams.length).toBeGreaterThan(0);
    expect(sorted(Object.keys(template.parameters))).toEqual(sorted(bicepParams));
  });

  it("gives each parameter the same default, bounds, allowed values and description", () => {
    for (const name of bicepParams) {
      const inBicep = bicepParameter(name);
      const inArm = template.parameters[name]!;
      const armType = { string: "string", int: "int", bool: "bool" }[inBicep.type] ?? inBicep.type;
      const secure = /@secure\(\)/.test(inBicep.declared);
      expect(inArm.type, name).toBe(secure ? `secure${armType}` : armType);
      // Expression defaults (resourceGroup().location, newGuid()) are ARM expressions there.
      const literal = typeof inBicep.defaultValue !== "string" || !/\(/.test(inBicep.defaultValue);
      if (literal) expect(inArm.defaultValue, name).toEqual(inBicep.defaultValue);
      for (const key of ["minValue", "maxValue", "minLength", "maxLength", "allowedValues"] as const) {
        expect(inArm[key], `${name}.${key}`).toEqual(inBicep[key]);
      }
      expect(inArm.metadata?.description, name).toBe(inBicep.metadata?.description);
    }
  });

  it("uses every bicep parameter beyond its declaration", () => {
    const body = bicep.replace(/^param\s.*$/gm, "");
    expect(bicepParams.filter((p) => !new RegExp(`\\b${p}\\b`).test(body))).toEqual([]);
  });

  it("has the same outputs, each with a type and a value", () => {
    expect(bicepOutputs.length).toBeGreaterThan(0);
    expect(sorted(Object.keys(template.outputs))).toEqual(sorted(bicepOutputs));
    for (const output of Object.values(template.outputs)) {
      expect(output.type).toBe("string");
      expect(output.value).toEqual(expect.any(String));
    }
  });
});

describe("the Function App", () => {
  const site = armResources.find((r) => r.type === "Microsoft.Web/sites")!;
  const siteConfig = site.properties!.siteConfig as { appSettings: { name: string }[] };
  const settings = siteConfig.appSettings.map((s) => s.name);

  it("runs Node.js 22 on the Flex Consumption plan", () => {
    const plan = armResources.find((r) => r.type === "Microsoft.Web/serverfarms")!;
    expect(plan).toMatchObject({ sku: { tier: "FlexConsumption", name: "FC1" } });
    expect(site).toMatchObject({
      kind: "functionapp,linux",
      identity: { type: "SystemAssigned" },
      properties: {
        functionAppConfig: {
          runtime: { name: "node", version: "22" },
          deployment: { storage: { authentication: { type: "SystemAssignedIdentity" } } },
        },
      },
    });
  });

  it("sets the same app settings as main.bicep", () => {
    const block = /appSettings:\s*\[([\s\S]*?)\n\s*\]/.exec(bicep)?.[1] ?? "";
    const inBicep = [...block.matchAll(/name:\s*'([^']+)'/g)].map((m) => m[1]!);
    expect(settings.length).toBeGreaterThan(0);
    expect(sorted(settings)).toEqual(sorted(inBicep));
  });

  it("sets only settings that functions/settings.ts or the host reads", () => {
    const host = new Set(["AzureWebJobsStorage__credential", "APPLICATIONINSIGHTS_CONNECTION_STRING"]);
    expect(settings.filter((s) => !host.has(s) && !settingsSource.includes(s))).toEqual([]);
    // The registry under the identity, and the host's storage by name: their
    // keys are never used (the liveness account's is, below).
    expect(settings).toEqual(
      expect.arrayContaining(["PAGEDISK_REGISTRY_ACCOUNT_URL", "AzureWebJobsStorage__accountName"]),
    );
    expect(settings).not.toContain("PAGEDISK_REGISTRY_CONNECTION_STRING");
    expect(settings).not.toContain("AzureWebJobsStorage");
  });

  it("sets none of the settings Flex Consumption refuses", () => {
    const refused = [
      "FUNCTIONS_WORKER_RUNTIME",
      "FUNCTIONS_EXTENSION_VERSION",
      "WEBSITE_NODE_DEFAULT_VERSION",
      "WEBSITE_RUN_FROM_PACKAGE",
      "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
      "WEBSITE_CONTENTSHARE",
    ];
    expect(settings.filter((s) => refused.includes(s))).toEqual([]);
  });

  it("never puts the admin key in an output", () => {
    expect(template.parameters.adminKey?.type).toBe("securestring");
    expect(referenced("parameters", template.outputs)).not.toContain("adminKey");
  });
});

describe("storage accounts and keys", () => {
  const accounts = armResources.filter((r) => r.type === "Microsoft.Storage/storageAccounts");
  const named = (variable: string) =>
    accounts.find((a) => a.name === `[variables('${variable}')]`);
  const site = armResources.find((r) => r.type === "Microsoft.Web/sites")!;
  const appSettings = (site.properties!.siteConfig as { appSettings: { name: string; value: string }[] })
    .appSettings;
  const livenessId = "resourceId('Microsoft.Storage/storageAccounts', variables('livenessAccountName'))";

  it("has the registry, liveness and pool accounts", () => {
    expect(sorted(accounts.map((a) => a.name))).toEqual(
      sorted([
        "[variables('registryAccountName')]",
        "[variables('livenessAccountName')]",
        "[variables('poolAccountName')]",
      ]),
    );
  });

  it("allows shared key access on the liveness account, and on no other", () => {
    const liveness = named("livenessAccountName")!;
    expect(liveness).toMatchObject({
      kind: "StorageV2",
      sku: { name: "Standard_LRS" },
      properties: {
        minimumTlsVersion: "TLS1_2",
        supportsHttpsTrafficOnly: true,
        allowBlobPublicAccess: false,
        allowSharedKeyAccess: true,
      },
    });
    expect(liveness.condition).toBeUndefined();
    for (const account of accounts.filter((a) => a !== liveness)) {
      expect(account.properties?.allowSharedKeyAccess, account.name).toBe(false);
    }
    expect(named("registryAccountName")?.properties?.allowSharedKeyAccess).toBe(false);
    expect(named("poolAccountName")?.properties?.allowSharedKeyAccess).toBe(false);
    // main.bicep: one account allows it, the liveness one.
    expect([...bicep.matchAll(/allowSharedKeyAccess:\s*true/g)]).toHaveLength(1);
    const block = /^resource liveness '[^']+' = \{[\s\S]*?^\}/m.exec(bicep)?.[0] ?? "";
    expect(block).toMatch(/allowSharedKeyAccess:\s*true/);
    expect([...bicep.matchAll(/allowSharedKeyAccess:\s*false/g)]).toHaveLength(accounts.length - 1);
  });

  it("names every account within the 24 characters storage allows", () => {
    // compactPrefix is at most 7 characters and uniqueString() 13.
    expect(template.variables.compactPrefix).toBe(
      "[take(replace(toLower(parameters('namePrefix')), '-', ''), 7)]",
    );
    expect(template.variables.suffix).toMatch(/^\[uniqueString\(/);
    for (const variable of ["registryAccountName", "livenessAccountName", "poolAccountName"]) {
      const m = /^\[format\('\{0\}([a-z0-9]+)\{1\}', variables\('compactPrefix'\), variables\('suffix'\)\)\]$/.exec(
        String(template.variables[variable]),
      );
      expect(m, variable).not.toBeNull();
      expect(7 + m![1]!.length + 13, variable).toBeLessThanOrEqual(24);
    }
    expect(bicep).toMatch(/^var livenessAccountName = '\$\{compactPrefix\}live\$\{suffix\}'$/m);
  });

  it("gives the app the liveness account's connection string, from listKeys", () => {
    const setting = appSettings.find((s) => s.name === "PAGEDISK_LIVENESS_CONNECTION_STRING");
    expect(setting).toBeDefined();
    expect(setting!.value).toBe(
      "[format('DefaultEndpointsProtocol=https;AccountName={0};AccountKey={1};EndpointSuffix={2}', " +
        `variables('livenessAccountName'), listKeys(${livenessId}, '2023-05-01').keys[0].value, ` +
        "environment().suffixes.storage)]",
    );
    expect(site.dependsOn).toContain(`[${livenessId}]`);
    expect(bicep).toMatch(
      /name: 'PAGEDISK_LIVENESS_CONNECTION_STRING'\s+value: 'DefaultEndpointsProtocol=https;AccountName=\$\{liveness\.name\};AccountKey=\$\{liveness\.listKeys\(\)\.keys\[0\]\.value\};EndpointSuffix=\$\{environment\(\)\.suffixes\.storage\}'/,
    );
  });

  it("reads a key nowhere else, and never in an output", () => {
    const withKeys = expressions(template).filter((e) => /listKeys|AccountKey/i.test(e));
    expect(withKeys).toHaveLength(1);
    expect(withKeys[0]).toContain(`listKeys(${livenessId}`);
    expect(expressions(template.outputs).filter((e) => /listKeys|AccountKey/i.test(e))).toEqual([]);
    expect([...bicep.matchAll(/listKeys\(/g)]).toHaveLength(1);
    expect(template.outputs.livenessAccountName?.value).toBe("[variables('livenessAccountName')]");
  });
});

describe("the Function App's scale settings", () => {
  const site = armResources.find((r) => r.type === "Microsoft.Web/sites")!;
  const scale = (site.properties!.functionAppConfig as { scaleAndConcurrency: Record<string, unknown> })
    .scaleAndConcurrency;

  it("sets instance memory, the instance cap and HTTP concurrency from parameters", () => {
    expect(scale).toEqual({
      maximumInstanceCount: "[parameters('maximumInstanceCount')]",
      instanceMemoryMB: "[parameters('instanceMemoryMB')]",
      triggers: { http: { perInstanceConcurrency: "[parameters('httpPerInstanceConcurrency')]" } },
    });
    const block = /scaleAndConcurrency:\s*\{[\s\S]*?\n {6}\}/.exec(bicep)?.[0] ?? "";
    expect(block).toMatch(/maximumInstanceCount: maximumInstanceCount/);
    expect(block).toMatch(/instanceMemoryMB: instanceMemoryMB/);
    expect(block).toMatch(
      /triggers:\s*\{\s*http:\s*\{\s*perInstanceConcurrency: httpPerInstanceConcurrency\s*\}\s*\}/,
    );
  });

  it("defaults to 512 MB instances, at most 40, 16 requests each", () => {
    expect(template.parameters.instanceMemoryMB).toMatchObject({
      type: "int",
      defaultValue: 512,
      allowedValues: [512, 2048, 4096],
    });
    expect(template.parameters.maximumInstanceCount).toMatchObject({ type: "int", defaultValue: 40 });
    expect(template.parameters.maximumInstanceCount!.minValue).toBeLessThanOrEqual(40);
    expect(template.parameters.httpPerInstanceConcurrency).toMatchObject({
      type: "int",
      defaultValue: 16,
      minValue: 1,
    });
    for (const name of ["instanceMemoryMB", "maximumInstanceCount", "httpPerInstanceConcurrency"]) {
      expect(template.parameters[name]!.metadata?.description, name).toMatch(/\d/);
    }
  });
});
