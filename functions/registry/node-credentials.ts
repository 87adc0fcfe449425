/**
 * Node credentials: `pdn_<node name>_<secret>`. Node names are DNS names
 * and hold no `_`, so the name parses back unambiguously; it says which
 * node's row holds the hash, so that a credential shown for the wrong
 * node is recognised as valid-but-not-yours (403) rather than unknown (401).
 */
import { newSecret, SECRET_PATTERN, sha256Hex } from "./secrets.ts";

const CREDENTIAL_FORMAT = new RegExp(`^pdn_([a-z0-9.-]{1,253})_${SECRET_PATTERN}$`);

/** A fresh credential for `node`, and the hash to store in its row. */
export function newNodeCredential(node: string): { credential: string; sha256: string } {
  const credential = `pdn_${node}_${newSecret()}`;
  return { credential, sha256: sha256Hex(credential) };
}

/** The node a credential claims to be; undefined when it is not a node credential. */
export function claimedNode(presented: string): string | undefined {
  return CREDENTIAL_FORMAT.exec(presented)?.[1];
}
