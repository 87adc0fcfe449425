/**
 * `<stateDir>/node.json`: who this agent is in the cluster, saved once at
 * join. It holds the node's credential, so the directory is 0700 and the
 * file 0600, and it is written whole or not at all (temp file + rename): a
 * crash mid-write never leaves a node that has joined but lost its
 * credential. The agent keeps one other secret on disk, the liveness SAS in
 * `liveness.json` (below), and deletes it when the node is rejected.
 */
import { chmod, mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { LivenessTarget } from "../../contract/node.ts";
import { writeStateFile } from "../host/state-file.ts";

/** What `node.json` holds. */
export interface NodeIdentity {
  /** The API root the node joined, e.g. `https://app.example/api/v1`. */
  controlPlane: string;
  /** The node's name in the cluster. */
  node: string;
  /** `pdn_<node>_<secret>`, sent as `Authorization: Bearer`. */
  credential: string;
}

/** node.json exists but cannot be used; nothing was changed. */
export class NodeFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NodeFileError";
  }
}

export function nodeFilePath(stateDir: string): string {
  return join(stateDir, "node.json");
}

/** The saved identity, or undefined when the node has not joined yet. */
export async function readNodeIdentity(stateDir: string): Promise<NodeIdentity | undefined> {
  const file = nodeFilePath(stateDir);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new NodeFileError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new NodeFileError(`${file} is not JSON; remove it and join again`);
  }
  const { controlPlane, node, credential } = (parsed ?? {}) as Record<string, unknown>;
  if (typeof controlPlane !== "string" || typeof node !== "string" || typeof credential !== "string") {
    throw new NodeFileError(`${file} must hold { controlPlane, node, credential } strings`);
  }
  return { controlPlane, node, credential };
}

/** Create the state dir (0700) if needed and write node.json atomically (0600). */
export async function saveNodeIdentity(stateDir: string, identity: NodeIdentity): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  // `mode` applies only to directories mkdir creates; an existing one may be laxer.
  await chmod(stateDir, 0o700);
  await writeStateFile(nodeFilePath(stateDir), `${JSON.stringify(identity, null, 2)}\n`);
}

/**
 * `<stateDir>/liveness.json`: where the node's heartbeats go, as its last
 * desired state said, so that an agent restarted while the API is away
 * still beats. It holds a SAS, so it is 0600 like node.json.
 */
export function livenessFilePath(stateDir: string): string {
  return join(stateDir, "liveness.json");
}

export async function readLivenessTarget(stateDir: string): Promise<LivenessTarget | undefined> {
  try {
    const parsed = JSON.parse(await readFile(livenessFilePath(stateDir), "utf8")) as Partial<LivenessTarget>;
    const { url, etag, intervalMs } = parsed ?? {};
    if (typeof url !== "string" || typeof etag !== "string" || typeof intervalMs !== "number") return undefined;
    return { url, etag, intervalMs };
  } catch {
    // Missing or unreadable: the first fetch of the desired state brings a new one.
    return undefined;
  }
}

export async function saveLivenessTarget(stateDir: string, target: LivenessTarget): Promise<void> {
  await writeStateFile(livenessFilePath(stateDir), `${JSON.stringify(target)}\n`);
}

/** Delete liveness.json (its SAS): the node was rejected, and its beats have stopped. */
export async function forgetLivenessTarget(stateDir: string): Promise<void> {
  await rm(livenessFilePath(stateDir), { force: true });
}
