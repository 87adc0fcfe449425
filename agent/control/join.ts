/**
 * Joining the cluster, once per VM: POST /nodes/join with a join token and
 * the VM's facts, then node.json with the credential. Joining again is a
 * no-op when node.json already names the same control plane, and an error
 * when it names another (leave the old cluster first: remove node.json).
 */
import { hostname } from "node:os";
import type { Logger } from "../log.ts";
import { UsageError } from "../serve/args.ts";
import { hostFacts } from "./facts.ts";
import { NodeClient } from "./node-client.ts";
import { type NodeIdentity, nodeFilePath, readNodeIdentity, saveNodeIdentity } from "./node-file.ts";
import { AGENT_VERSION } from "./version.ts";

/** Node names are lowercase DNS names (contract/names.ts `NodeName`). */
const NODE_NAME =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

export interface JoinOptions {
  /** API root (see control-plane-url.ts). */
  apiUrl: string;
  stateDir: string;
  /** Needed only when the node has not joined yet. */
  token?: string | undefined;
  /** Default: the host name, lowercased. */
  name?: string | undefined;
  log: Logger;
}

export interface Joined {
  identity: NodeIdentity;
  /** False when node.json was there already. */
  joinedNow: boolean;
}

/** Check a node name given on the command line. */
export function checkNodeName(name: string): string {
  if (!NODE_NAME.test(name)) {
    throw new UsageError(
      `invalid node name "${name}": a lowercase DNS name (letters, digits, '-', labels joined by '.')`,
    );
  }
  return name;
}

/** The saved identity, or a new one from the control plane (saved before returning). */
export async function joinCluster(opts: JoinOptions): Promise<Joined> {
  const saved = await readNodeIdentity(opts.stateDir);
  if (saved) {
    if (saved.controlPlane !== opts.apiUrl) {
      throw new UsageError(
        `${nodeFilePath(opts.stateDir)} is for control plane ${saved.controlPlane}, not ${opts.apiUrl}: remove it to join another cluster`,
      );
    }
    if (opts.name !== undefined && opts.name !== saved.node) {
      throw new UsageError(
        `this VM joined as node ${saved.node}, not ${opts.name}: remove ${nodeFilePath(opts.stateDir)} to join under another name`,
      );
    }
    return { identity: saved, joinedNow: false };
  }
  if (!opts.token) {
    throw new UsageError(
      "not joined yet: give --join-token (or PAGEDISK_JOIN_TOKEN) to join the cluster",
    );
  }
  const name = opts.name ?? defaultNodeName();
  const client = new NodeClient({ apiUrl: opts.apiUrl });
  const answer = await client.join(opts.token, {
    name,
    agentVersion: AGENT_VERSION,
    facts: hostFacts(),
  });
  const identity: NodeIdentity = {
    controlPlane: opts.apiUrl,
    node: answer.node.name,
    credential: answer.credential,
  };
  await saveNodeIdentity(opts.stateDir, identity);
  opts.log.info({ node: identity.node, controlPlane: opts.apiUrl }, "joined the cluster");
  return { identity, joinedNow: true };
}

function defaultNodeName(): string {
  const name = hostname().toLowerCase();
  if (!NODE_NAME.test(name)) {
    throw new UsageError(`the host name "${name}" is not a valid node name: pass --name`);
  }
  return name;
}
