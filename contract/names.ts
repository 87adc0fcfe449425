/**
 * Names of things in the cluster. They end up in Table Storage keys, blob
 * names and URLs, so they are restricted to what is safe in all three.
 */
import { z } from "zod";

/** A DNS label: lowercase letters, digits and `-`, 1..63 chars, alphanumeric at both ends. */
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** A DNS subdomain: dot-separated labels, at most 253 chars (VM host names may be FQDNs). */
const DNS_SUBDOMAIN =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

function label(what: string) {
  return z.string().regex(DNS_LABEL, {
    error: `${what} name must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
  });
}

/** Name of a volume, e.g. `db-data`. */
export const VolumeName = label("volume");
/** Name of a pool (a storage account and container), e.g. `westeu-1`. */
export const PoolName = label("pool");
/** Name of a node, normally the VM's host name. */
export const NodeName = z.string().regex(DNS_SUBDOMAIN, {
  error: "node name must be a lowercase DNS name: labels of letters, digits or '-', joined by '.'",
});

/**
 * Azure blob container name: 3-63 chars, lowercase letters, digits and
 * single hyphens, starting and ending with a letter or digit.
 */
export const ContainerName = z.string().regex(/^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$/, {
  error: "container name must be 3-63 lowercase letters, digits or single hyphens",
});

/** Instant as an ISO 8601 UTC string, e.g. `2025-01-31T12:00:00.000Z`. */
export const Timestamp = z.iso.datetime();

export type VolumeName = z.infer<typeof VolumeName>;
export type PoolName = z.infer<typeof PoolName>;
export type NodeName = z.infer<typeof NodeName>;
