/**
 * bicep/azuredeploy.json is written by hand where `az bicep build` would
 * make it (no Bicep compiler installs here): these checks hold it to what
 * ARM accepts and to main.bicep. Every expression's parameters and variables
 * exist and every parameter is used; the resources (type and apiVersion,
 * conditions included), parameters and outputs are those main.bicep
 * declares; the app settings are ones the control plane or the Functions
 * host reads, and none that the Flex Consumption plan refuses.
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
interface Template {
  $schema: string;
  contentVersion: string;
  parameters: Record<string, { type: string; defaultValue?: unknown }>;
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
    // The registry under the identity, and the host's storage by name: no key anywhere.
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
