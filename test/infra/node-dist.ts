/**
 * A Node.js download directory laid out as nodejs.org/dist/latest-v22.x is
 * (SHASUMS256.txt beside node-vX.Y.Z-linux-ARCH.tar.gz), served over
 * loopback HTTP, for the installer's PAGEDISK_NODE_DIST. The tarball's
 * bin/node is a symlink to the project's real Node 22, so what the installer
 * unpacks runs.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { NODE } from "./installer.ts";

/** The version the tarball claims; the binary inside answers with its own. */
export const DIST_VERSION = "v22.99.0";

export interface NodeDist {
  /** Base URL to give as PAGEDISK_NODE_DIST. */
  url: string;
  /** Requests served, by path. */
  requests: string[];
  close(): Promise<void>;
}

/** Node's name for this machine's architecture in tarball names. */
function distArch(): string {
  if (process.arch === "x64" || process.arch === "arm64") return process.arch;
  throw new Error(`no Node.js dist name known for ${process.arch}`);
}

/** Serve the directory; `checksum: "wrong"` lists a SHA-256 the tarball does not have. */
export async function startNodeDist(checksum: "right" | "wrong" = "right"): Promise<NodeDist> {
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-node-dist-"));
  const base = `node-${DIST_VERSION}-linux-${distArch()}`;
  await mkdir(join(dir, base, "bin"), { recursive: true });
  await symlink(NODE, join(dir, base, "bin", "node"));
  const tarball = `${base}.tar.gz`;
  await promisify(execFile)("tar", ["-czf", join(dir, tarball), "-C", dir, base]);
  const sum = createHash("sha256")
    .update(await readFile(join(dir, tarball)))
    .digest("hex");
  const listed = checksum === "right" ? sum : sum.replace(/^./, (c) => (c === "0" ? "1" : "0"));
  // Other files as the real list has them, so the installer must pick its own line.
  const lines = [
    `${"a".repeat(64)}  node-${DIST_VERSION}-darwin-arm64.tar.gz`,
    `${listed}  ${tarball}`,
    `${"b".repeat(64)}  ${base}.tar.xz`,
  ];
  await writeFile(join(dir, "SHASUMS256.txt"), `${lines.join("\n")}\n`);

  const requests: string[] = [];
  const server = createServer((req, res) => {
    const name = new URL(req.url ?? "/", "http://dist").pathname.slice(1);
    requests.push(name);
    if (name !== "SHASUMS256.txt" && name !== tarball) {
      res.writeHead(404).end();
      return;
    }
    readFile(join(dir, name)).then(
      (body) => res.writeHead(200, { "content-length": body.length }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async close() {
      server.close();
      await once(server, "close");
      await rm(dir, { recursive: true, force: true });
    },
  };
}
