/**
 * What the API may show of how the control plane reaches a pool: a
 * connection string with its secrets masked, or the account URL of a
 * managed-identity pool (which holds no secret).
 */
import type { PoolAuth } from "../../contract/pool.ts";
import { maskConnectionString } from "./connection-string.ts";
import type { PoolCredentials } from "./pool-container.ts";

export function poolAuthView(pool: PoolCredentials): PoolAuth {
  return pool.authKind === "connectionString"
    ? { kind: "connectionString", connectionString: maskConnectionString(pool.connectionString) }
    : { kind: "managedIdentity", accountUrl: pool.accountUrl };
}
