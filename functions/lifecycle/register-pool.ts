/**
 * `POST /pools`: refuse a connection string that carries an account key or
 * SAS unless the operator allows them (`PAGEDISK_POOL_ACCOUNT_KEYS`), check
 * the connection string (or account URL) names an account, refuse a name or
 * a container already registered, prove the pool answers to its credentials
 * (its container is created if missing), then insert the record (its
 * connection string sealed: registry/pools.ts).
 */
import type { PoolAuthCreate, PoolCreate } from "../../contract/pool.ts";
import type { ControlPlane } from "../control-plane.ts";
import { ApiError } from "../http/api-error.ts";
import { invalidInput } from "../http/input.ts";
import { checkSealable, type PoolRecord, pools } from "../registry/pools.ts";
import { isRegistryError } from "../registry/registry-error.ts";
import {
  type AccountEndpoint,
  accountOf,
  accountOfUrl,
  carriesAccountSecret,
} from "../storage/connection-string.ts";
import { type PoolCredentials, probePool } from "../storage/pool-container.ts";
import { StorageFailure } from "../storage/storage-failure.ts";
import { note } from "./note.ts";

export async function registerPool(cp: ControlPlane, request: PoolCreate): Promise<PoolRecord> {
  const { auth } = request;
  if (
    cp.poolAccountKeys === "refuse" &&
    auth.kind === "connectionString" &&
    carriesAccountSecret(auth.connectionString)
  ) {
    throw new ApiError(
      "Forbidden",
      `pool ${request.name}: this control plane takes no account keys or SAS for pools (PAGEDISK_POOL_ACCOUNT_KEYS=refuse): register it with the managed identity (auth kind managedIdentity and the account's blob endpoint; the control plane's identity needs Storage Blob Data Contributor on the account), or have the operator set PAGEDISK_POOL_ACCOUNT_KEYS=allow`,
      { setting: "PAGEDISK_POOL_ACCOUNT_KEYS", value: "refuse" },
    );
  }
  const { endpoint, credentials } = accountOfAuth(auth);
  const table = pools(cp.registry);
  const registered = (await table.list()).map((p) => p.value);
  if (registered.some((p) => p.name === request.name)) throw exists(request.name);
  const twin = registered.find(
    (p) => p.blobEndpoint === endpoint.blobEndpoint && p.container === request.container,
  );
  if (twin) {
    // Two pool names over one container would let "distinct" replicas share a failure domain.
    throw new ApiError(
      "PoolExists",
      `container ${request.container} of ${endpoint.blobEndpoint} is already pool ${twin.name}`,
      {
        pool: twin.name,
      },
    );
  }

  if (credentials.authKind === "connectionString") {
    checkSealable(request.name, credentials.connectionString);
  }
  const location = { name: request.name, container: request.container, ...credentials };
  try {
    await probePool(location);
  } catch (err) {
    if (!(err instanceof StorageFailure)) throw err;
    throw new ApiError(
      "PoolUnreachable",
      `pool ${request.name} did not accept the control plane: ${err.message}`,
      {
        status: err.status ?? null,
        azureCode: err.azureCode ?? null,
      },
    );
  }

  const now = cp.now().toISOString();
  const record: PoolRecord = {
    name: request.name,
    account: endpoint.account,
    blobEndpoint: endpoint.blobEndpoint,
    container: request.container,
    ...credentials,
    health: "UNKNOWN",
    usage: "IN_USE",
    annotations: {},
    createdAt: now,
    updatedAt: now,
  };
  try {
    await table.insert(record);
  } catch (err) {
    throw isRegistryError(err, "Exists") ? exists(request.name) : err;
  }
  await note(cp, {
    type: "pool-registered",
    pool: request.name,
    message: `pool ${request.name} registered: ${endpoint.blobEndpoint}/${request.container}`,
  });
  return record;
}

function exists(name: string): ApiError {
  return new ApiError("PoolExists", `pool ${name} already exists`, { pool: name });
}

/** The account the request names, and the credentials to keep; `InvalidRequest` if it names none. */
function accountOfAuth(auth: PoolAuthCreate): {
  endpoint: AccountEndpoint;
  credentials: PoolCredentials;
} {
  const field = auth.kind === "connectionString" ? "connectionString" : "accountUrl";
  try {
    if (auth.kind === "connectionString") {
      const { connectionString } = auth;
      return {
        endpoint: accountOf(connectionString),
        credentials: { authKind: "connectionString", connectionString },
      };
    }
    const endpoint = accountOfUrl(auth.accountUrl);
    // Kept as the endpoint it names, so that two spellings of one account are seen as one.
    return {
      endpoint,
      credentials: { authKind: "managedIdentity", accountUrl: endpoint.blobEndpoint },
    };
  } catch (err) {
    throw invalidInput(`body.auth.${field}`, (err as Error).message);
  }
}
