/**
 * infra/install-agent.sh run by bash as a user would, with `--root` so it
 * installs into a temp dir, against the local control plane on Azurite:
 * the real `agent join` of the built bundle registers each node. Tests that
 * share a root run in order: install, re-run, uninstall, purge.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { runTool } from "../harness/tools.ts";
import {
  BUNDLE,
  ensureBundleBuilt,
  modeOf,
  NODE,
  parseUnit,
  runInstaller,
  SCRIPT,
  snapshotTree,
} from "./installer.ts";
import { startNodeDist } from "./node-dist.ts";

let azurite: Azurite;
let local: LocalControlPlane;
let scratch: string;
/** `http://127.0.0.1:PORT`: what users pass as --control-plane (the API is below /api/v1). */
let origin: string;
let joinToken: string;

beforeAll(async () => {
  await ensureBundleBuilt();
  azurite = await startAzurite({ table: true, inMemory: true });
  scratch = await mkdtemp(join(tmpdir(), "pagedisk-install-"));
  local = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {},
    port: 0,
    stateDir: join(scratch, "control-plane"),
    // Nodes here never heartbeat; no sweep should mark them while the file runs.
    sweepIntervalMs: 3_600_000,
    log: () => {},
  });
  origin = new URL(local.apiUrl).origin;
  const res = await admin("POST", "/tokens", { expiresInSeconds: 3600 });
  expect(res.status).toBe(201);
  joinToken = ((await res.json()) as { token: string }).token;
});
afterAll(async () => {
  await local?.close();
  await azurite?.dispose();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

function admin(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${local.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${local.adminKey}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

/** Names of the nodes the control plane knows. */
async function nodeNames(): Promise<string[]> {
  const res = await admin("GET", "/nodes");
  expect(res.status).toBe(200);
  return ((await res.json()) as { items: Array<{ name: string }> }).items.map((n) => n.name);
}

/** A fresh, empty directory to install into. */
async function freshRoot(name: string): Promise<string> {
  const root = join(scratch, name);
  await mkdir(root);
  return root;
}

/** Options of a first install into `root` with the project's Node and bundle. */
function installArgs(root: string, name: string): string[] {
  return [
    "--root",
    root,
    "--node",
    NODE,
    "--bundle",
    BUNDLE,
    "--join-token",
    joinToken,
    "--control-plane",
    origin,
    "--name",
    name,
  ];
}

/** Options of a run into `root` that joins nobody: the project's Node and bundle, no token. */
function localArgs(root: string): string[] {
  return ["--root", root, "--node", NODE, "--bundle", BUNDLE, "--control-plane", origin];
}

/** `args` without `--node PATH`, so the installer has to find or install a Node itself. */
function withoutNode(args: string[]): string[] {
  const at = args.indexOf("--node");
  return at < 0 ? args : [...args.slice(0, at), ...args.slice(at + 2)];
}

const UNIT = "etc/systemd/system/pagedisk-agent.service";

describe("the script itself", () => {
  it("passes shellcheck", async () => {
    const { stdout, stderr } = await runTool("shellcheck", [SCRIPT]);
    expect(stdout + stderr).toBe("");
  });

  it('has one CONTROL_PLANE_DEFAULT="" line, the one the control plane fills in', async () => {
    const lines = (await readFile(SCRIPT, "utf8")).split("\n");
    expect(lines.filter((l) => l === 'CONTROL_PLANE_DEFAULT=""')).toHaveLength(1);
  });
});

describe("bad input", () => {
  it("-h prints the usage on stdout and does nothing else", async () => {
    const root = await freshRoot("help");
    const r = await runInstaller(["-h", "--root", root]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: install-agent.sh --join-token TOKEN [options]");
    expect(r.stderr).toBe("");
    expect(await readdir(root)).toEqual([]);
  });

  it.each([
    [["--bogus"], /unknown option: --bogus/],
    [["--join-token"], /--join-token needs a value/],
    [["-x", "--join-token", "t"], /unknown option: -x/],
  ])("%j: exit 2 with the usage on stderr", async (args, message) => {
    const root = await freshRoot(`usage-${args.join("").replace(/\W/g, "")}`);
    const r = await runInstaller([...args, "--root", root]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toContain("Usage: install-agent.sh");
    expect(r.stdout).toBe("");
    expect(await readdir(root)).toEqual([]);
  });

  it.each([
    [["--purge"], /--purge only goes with --uninstall/],
    [["--uninstall", "--join-token", "t"], /--uninstall takes only --root and --purge/],
    [["--kernel", "sideways"], /--kernel must be auto, nbd, fuse or none/],
    [["--control-plane", "http://cp.example.com"], /must use https/],
    [["--control-plane", "ftp://cp.example.com"], /must be an http\(s\) URL/],
    [["--control-plane", 'https://cp"$(reboot)'], /must be an http\(s\) URL/],
    [["--join-token", "t;rm -rf /"], /not a pagedisk join token/],
    [["--name", "Not_A_Name"], /not a lowercase DNS name/],
    [["--node", "/nonexistent/node"], /--node must be the absolute path of an executable/],
    [["--node", "/bin/true"], /is not Node.js 22/],
    [["--bundle", "/nonexistent.mjs"], /--bundle \/nonexistent.mjs is not a readable file/],
  ])("%j: exit 2 with a clear message, nothing written", async (args, message) => {
    const root = await freshRoot(`bad-${Math.random().toString(36).slice(2)}`);
    const base = ["--root", root, "--control-plane", origin, "--join-token", "pdj_x_y"];
    const r = await runInstaller([...base, ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe("");
    expect(await readdir(root)).toEqual([]);
  });

  it("a first install without a join token says so and leaves nothing behind", async () => {
    const root = await freshRoot("no-token");
    const r = await runInstaller(localArgs(root));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--join-token TOKEN is required: this VM has not joined yet/);
    expect(await readdir(root)).toEqual([]);
  });

  it("without any control plane it says so and leaves nothing behind", async () => {
    const root = await freshRoot("no-control-plane");
    const r = await runInstaller(["--root", root, "--node", NODE, "--join-token", joinToken]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no control plane: pass --control-plane URL/);
    expect(await readdir(root)).toEqual([]);
  });

  it("a join token the control plane refuses fails the join, leaving nothing", async () => {
    const root = await freshRoot("refused-token");
    const args = installArgs(root, "refused");
    args[args.indexOf(joinToken)] = `pdj_${"0".repeat(16)}_${"x".repeat(43)}`;
    const r = await runInstaller(args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/could not join the cluster.*nothing was installed/);
    expect(await readdir(root)).toEqual([]);
    expect(await nodeNames()).not.toContain("refused");
  });

  it("a bundle that is not one is refused before anything is written", async () => {
    const root = await freshRoot("not-a-bundle");
    const page = join(scratch, "error-page.mjs");
    await writeFile(page, "<html><body>502 Bad Gateway</body></html>\n");
    const args = installArgs(root, "not-a-bundle");
    args[args.indexOf(BUNDLE)] = page;
    const r = await runInstaller(args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is not the pagedisk agent bundle/);
    expect(await readdir(root)).toEqual([]);
    expect(await nodeNames()).not.toContain("not-a-bundle");
  });
});

describe("the join token", () => {
  it("reaches `agent join` in its environment, never on a command line others can read in ps", async () => {
    const root = await freshRoot("token-not-in-argv");
    // A Node that writes down how it was called, then runs: every process the installer starts with it.
    const calls = join(scratch, "node-calls.log");
    const recorder = join(scratch, "recording-node");
    await writeFile(
      recorder,
      `#!/bin/bash\nprintf '%s token-in-env=%s\\n' "$*" "\${PAGEDISK_JOIN_TOKEN:+yes}" >>${calls}\nexec ${NODE} "$@"\n`,
      { mode: 0o755 },
    );
    const args = installArgs(root, "vm-token-env");
    args[args.indexOf(NODE)] = recorder;
    const r = await runInstaller(args);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(await nodeNames()).toContain("vm-token-env");
    const lines = (await readFile(calls, "utf8")).trim().split("\n");
    const joins = lines.filter((l) => l.includes(" agent join "));
    expect(joins).toHaveLength(1);
    expect(joins[0]).toMatch(/token-in-env=yes$/);
    for (const line of lines) expect(line).not.toContain(joinToken);
  });
});

describe("install, re-run, uninstall, purge", () => {
  let root: string;
  const name = "vm-install-1";

  beforeAll(async () => {
    root = await freshRoot("lifecycle");
  });

  it("installs the agent, joins the node and writes a hardened unit", async () => {
    const r = await runInstaller(installArgs(root, name));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`joining ${origin} as ${name}`);
    // No lib/modules under the root: the fallback, said out loud; nothing done outside the root.
    expect(r.stdout).toContain("kernel binding: nbdfuse + loop (this kernel has no nbd module)");
    expect(r.stdout).toMatch(/skipped \(--root\): .* install nbdfuse fuse3/);
    expect(r.stdout).toContain("skipped (--root): modprobe loop fuse");
    expect(r.stdout).toContain(
      "skipped (--root): systemctl daemon-reload; systemctl enable --now pagedisk-agent.service",
    );

    expect(await nodeNames()).toContain(name);

    expect(await readFile(join(root, "opt/pagedisk/pagedisk.mjs"))).toEqual(await readFile(BUNDLE));
    expect(await modeOf(join(root, "opt/pagedisk/pagedisk.mjs"))).toBe(0o644);
    expect(await readFile(join(root, "etc/pagedisk/agent.env"), "utf8")).toBe(
      `PAGEDISK_CONTROL_PLANE=${origin}\nPAGEDISK_KERNEL=auto\n`,
    );
    expect(await modeOf(join(root, "etc/pagedisk/agent.env"))).toBe(0o600);
    expect(await modeOf(join(root, "var/lib/pagedisk"))).toBe(0o700);
    expect(await modeOf(join(root, "var/lib/pagedisk/node.json"))).toBe(0o600);
    const identity = JSON.parse(await readFile(join(root, "var/lib/pagedisk/node.json"), "utf8"));
    expect(identity).toMatchObject({ node: name, credential: expect.stringMatching(/^pdn_/) });
    // No kernel module in the root, so no modules-load file.
    expect(existsSync(join(root, "etc/modules-load.d/pagedisk-nbd.conf"))).toBe(false);

    expect(await modeOf(join(root, UNIT))).toBe(0o644);
    const unit = parseUnit(await readFile(join(root, UNIT), "utf8"));
    expect(unit.Service!.ExecStart).toEqual([
      `${NODE} /opt/pagedisk/pagedisk.mjs agent run --control-plane \${PAGEDISK_CONTROL_PLANE}` +
        " --state-dir /var/lib/pagedisk --kernel ${PAGEDISK_KERNEL}",
    ]);
    expect(unit.Unit).toMatchObject({
      Wants: ["network-online.target"],
      After: ["network-online.target"],
      StartLimitIntervalSec: [expect.stringMatching(/^\d+$/)],
      StartLimitBurst: [expect.stringMatching(/^\d+$/)],
    });
    expect(unit.Service).toMatchObject({
      EnvironmentFile: ["/etc/pagedisk/agent.env"],
      Restart: ["always"],
      RestartSec: [expect.stringMatching(/^\d+s$/)],
      KillMode: ["process"],
      NoNewPrivileges: ["yes"],
      ProtectSystem: ["strict"],
      ReadWritePaths: ["/var/lib/pagedisk"],
      ProtectHome: ["yes"],
      PrivateTmp: ["yes"],
      ProtectKernelTunables: ["yes"],
      LockPersonality: ["yes"],
      CapabilityBoundingSet: ["CAP_SYS_ADMIN"],
    });
    expect(unit.Service!.RestrictAddressFamilies![0]!.split(" ").sort()).toEqual(
      ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"],
    );
    // Node's JIT cannot run under it, and the agent needs its devices.
    expect(unit.Service!.MemoryDenyWriteExecute).toBeUndefined();
    expect(unit.Service!.PrivateDevices).toBeUndefined();
    expect(unit.Install).toEqual({ WantedBy: ["multi-user.target"] });
    // systemd's own reading of the unit: no unknown keys, no bad values.
    const verify = await runTool("systemd-analyze", ["verify", join(root, UNIT)], { allowFailure: true });
    expect(verify.stdout + verify.stderr).toBe("");
    expect(verify.code).toBe(0);
  });

  it("a second run with the same options changes nothing and does not join again", async () => {
    const before = await snapshotTree(root);
    const joined: unknown = await admin("GET", `/nodes/${name}`).then((res) => res.json());
    const r = await runInstaller(installArgs(root, name));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      "already joined (/var/lib/pagedisk/node.json): upgrading, same identity",
    );
    expect(r.stdout).toContain("agent files are up to date");
    expect(r.stdout).not.toContain("joining");
    expect(r.stdout).not.toContain("wrote");
    expect(await snapshotTree(root)).toEqual(before);
    expect(await admin("GET", `/nodes/${name}`).then((res) => res.json())).toEqual(joined);
    expect((await nodeNames()).filter((n) => n === name)).toHaveLength(1);
  });

  it("a re-run pointing at another control plane is refused and changes nothing", async () => {
    const before = await snapshotTree(root);
    const args = localArgs(root);
    args[args.indexOf(origin)] = "http://127.0.0.1:9";
    const r = await runInstaller(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`this VM joined ${origin}/api/v1, not http://127.0.0.1:9`);
    expect(await snapshotTree(root)).toEqual(before);
  });

  it("an upgrade replaces the bundle atomically, keeping identity and settings", async () => {
    const nodeJson = await readFile(join(root, "var/lib/pagedisk/node.json"));
    const envBefore = (await snapshotTree(root))["etc/pagedisk/agent.env"];
    const newer = join(scratch, "newer.mjs");
    await writeFile(newer, `${await readFile(BUNDLE, "utf8")}\n// a newer build\n`);
    // No --control-plane and no token: both come from the first install.
    const r = await runInstaller(["--root", root, "--node", NODE, "--bundle", newer]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("wrote /opt/pagedisk/pagedisk.mjs");
    expect(r.stdout).not.toContain("wrote /etc/pagedisk/agent.env");
    expect(await readFile(join(root, "opt/pagedisk/pagedisk.mjs"))).toEqual(await readFile(newer));
    expect(await modeOf(join(root, "opt/pagedisk/pagedisk.mjs"))).toBe(0o644);
    expect(await readFile(join(root, "var/lib/pagedisk/node.json"))).toEqual(nodeJson);
    expect((await snapshotTree(root))["etc/pagedisk/agent.env"]).toEqual(envBefore);
    // No temp file left beside the bundle.
    expect(await readdir(join(root, "opt/pagedisk"))).toEqual(["pagedisk.mjs"]);
  });

  it("--uninstall removes what it installed and keeps the node's identity", async () => {
    const r = await runInstaller(["--uninstall", "--root", root]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("skipped (--root): systemctl disable --now pagedisk-agent.service");
    for (const gone of [UNIT, "opt/pagedisk/pagedisk.mjs", "etc/pagedisk/agent.env"]) {
      expect(r.stdout).toContain(`removed /${gone}`);
      expect(existsSync(join(root, gone))).toBe(false);
    }
    expect(existsSync(join(root, "opt/pagedisk"))).toBe(false);
    expect(existsSync(join(root, "etc/pagedisk"))).toBe(false);
    expect(r.stdout).toContain("kept /var/lib/pagedisk");
    expect(await modeOf(join(root, "var/lib/pagedisk/node.json"))).toBe(0o600);
  });

  it("a reinstall after --uninstall comes back as the same node without a token", async () => {
    const r = await runInstaller(localArgs(root));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain("joining");
    expect(existsSync(join(root, UNIT))).toBe(true);
  });

  it("--uninstall --purge removes the state dir too", async () => {
    const r = await runInstaller(["--uninstall", "--purge", "--root", root]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("removed /var/lib/pagedisk");
    expect(existsSync(join(root, "var/lib/pagedisk"))).toBe(false);
    expect(existsSync(join(root, UNIT))).toBe(false);
    expect(existsSync(join(root, "opt/pagedisk"))).toBe(false);
  });
});

describe("distributions and kernels", () => {
  /** An image with this os-release and, when `nbd`, an nbd module on disk. */
  async function image(dir: string, osRelease: string, nbd: boolean): Promise<string> {
    const root = await freshRoot(dir);
    await mkdir(join(root, "etc"));
    await writeFile(join(root, "etc/os-release"), osRelease);
    if (nbd) {
      const drivers = join(root, "lib/modules/6.8.0-1021-azure/kernel/drivers/block");
      await mkdir(drivers, { recursive: true });
      await writeFile(join(drivers, "nbd.ko.zst"), "");
    }
    return root;
  }

  it.each([
    ["ubuntu", "Ubuntu 24.04.1 LTS", "ID=ubuntu\nID_LIKE=debian\n", "apt-get install nbd-client"],
    ["rhel", "Red Hat Enterprise Linux 9.4", 'ID="rhel"\nID_LIKE="fedora"\n', "dnf install nbd"],
    ["azurelinux", "Microsoft Azure Linux 3.0", "ID=azurelinux\n", "tdnf install nbd"],
  ])("%s with an nbd module: nbd-client, the module loaded at boot", async (...row) => {
    const [distro, pretty, ids, install] = row;
    const root = await image(`distro-${distro}`, `PRETTY_NAME="${pretty}"\n${ids}`, true);
    const r = await runInstaller(installArgs(root, `vm-${distro}`));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`system: ${pretty}`);
    expect(r.stdout).toContain("kernel binding: nbd (");
    expect(r.stdout).toContain(`skipped (--root): ${install}`);
    expect(r.stdout).toContain("skipped (--root): modprobe nbd");
    const modules = join(root, "etc/modules-load.d/pagedisk-nbd.conf");
    const lines = (await readFile(modules, "utf8")).split("\n");
    expect(lines.filter((l) => l && !l.startsWith("#"))).toEqual(["nbd"]);
    expect(await modeOf(modules)).toBe(0o644);

    const removed = await runInstaller(["--uninstall", "--root", root]);
    expect(removed.code).toBe(0);
    expect(existsSync(modules)).toBe(false);
  });

  it("--kernel fuse takes the fallback even with a module; the unit gets the mode", async () => {
    const root = await image("kernel-fuse", "ID=debian\n", true);
    const r = await runInstaller([...installArgs(root, "vm-fuse"), "--kernel", "fuse"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("kernel binding: nbdfuse + loop (--kernel fuse)");
    expect(r.stdout).toContain("skipped (--root): apt-get install libnbd-bin fuse3");
    expect(existsSync(join(root, "etc/modules-load.d/pagedisk-nbd.conf"))).toBe(false);
    const env = await readFile(join(root, "etc/pagedisk/agent.env"), "utf8");
    expect(env).toContain("PAGEDISK_KERNEL=fuse\n");
  });

  it("--kernel nbd without a module fails before joining", async () => {
    const root = await image("kernel-nbd-missing", "ID=debian\n", false);
    const r = await runInstaller([...installArgs(root, "vm-no-nbd"), "--kernel", "nbd"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("--kernel nbd, but this kernel has no nbd module");
    expect(await readdir(root)).toEqual(["etc"]);
    expect(await nodeNames()).not.toContain("vm-no-nbd");
  });
});

describe("Node.js from the official tarball", () => {
  it("installs it when missing, checked against SHASUMS256.txt; uninstall removes it", async () => {
    const dist = await startNodeDist("right");
    try {
      const root = await freshRoot("node-tarball");
      const args = withoutNode(installArgs(root, "vm-node-tarball"));
      const r = await runInstaller(args, { env: { PAGEDISK_NODE_DIST: dist.url } });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(
        /installed node-v22\.99\.0-linux-\w+ into \/opt\/pagedisk\/node \(SHA-256 checked/,
      );
      expect(dist.requests).toEqual([
        "SHASUMS256.txt",
        expect.stringMatching(/^node-v22\.99\.0-linux-\w+\.tar\.gz$/),
      ]);
      const unit = parseUnit(await readFile(join(root, UNIT), "utf8"));
      expect(unit.Service!.ExecStart![0]).toMatch(
        /^\/opt\/pagedisk\/node\/bin\/node \/opt\/pagedisk\/pagedisk.mjs agent run /,
      );
      expect(await nodeNames()).toContain("vm-node-tarball");

      // The second run finds the Node it installed and downloads nothing.
      const again = await runInstaller(args, { env: { PAGEDISK_NODE_DIST: dist.url } });
      expect(again.code).toBe(0);
      expect(dist.requests).toHaveLength(2);

      const removed = await runInstaller(["--uninstall", "--root", root]);
      expect(removed.stdout).toContain("removed /opt/pagedisk/node");
      expect(existsSync(join(root, "opt/pagedisk"))).toBe(false);
    } finally {
      await dist.close();
    }
  });

  it("refuses a tarball whose SHA-256 does not match and installs nothing", async () => {
    const dist = await startNodeDist("wrong");
    try {
      const root = await freshRoot("node-tarball-bad");
      const args = withoutNode(installArgs(root, "vm-bad-tarball"));
      const r = await runInstaller(args, { env: { PAGEDISK_NODE_DIST: dist.url } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/does not match its SHA-256 in SHASUMS256.txt; nothing installed/);
      expect(await readdir(root)).toEqual([]);
      expect(await nodeNames()).not.toContain("vm-bad-tarball");
    } finally {
      await dist.close();
    }
  });
});

describe("the script as the control plane serves it", () => {
  it("has the control plane filled in and installs with only a join token", async () => {
    const res = await fetch(`${origin}/api/agent/install.sh`);
    expect(res.status).toBe(200);
    const served = await res.text();
    const original = await readFile(SCRIPT, "utf8");
    const filled = original.replace(
      /^CONTROL_PLANE_DEFAULT=""$/m,
      `CONTROL_PLANE_DEFAULT="${origin}"`,
    );
    expect(served).toBe(filled);
    expect(served).not.toBe(original);

    // curl ... | bash -s -- --join-token T: the bundle comes from the control plane too.
    const root = await freshRoot("served");
    const args = ["--root", root, "--node", NODE, "--join-token", joinToken, "--name", "vm-served"];
    const r = await runInstaller(args, { script: served });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`downloading the agent from ${origin}/api/agent/pagedisk.mjs`);
    expect(await readFile(join(root, "opt/pagedisk/pagedisk.mjs"))).toEqual(await readFile(BUNDLE));
    const env = await readFile(join(root, "etc/pagedisk/agent.env"), "utf8");
    expect(env).toContain(`PAGEDISK_CONTROL_PLANE=${origin}\n`);
    expect(await nodeNames()).toContain("vm-served");
  });
});
