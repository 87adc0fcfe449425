/**
 * The cluster the replica end-to-end tests run on: Azurite; the control
 * plane in process, its sweeper every 250 ms, agents told to beat every
 * second, pools GOOD again two seconds after the last failure report and
 * never BAD on their own; pool pa reached directly and pool pb through the
 * first of the fault proxies; a join token for one agent, whose arguments
 * give it 64 KiB dirty-log granules. The agent itself is the caller's to
 * start and stop.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { get as httpGet } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlobServiceClient, type PageBlobClient } from "@azure/storage-blob";
import { ApiClient } from "../../agent/control/api-client.ts";
import type { ReplicaReport } from "../../contract/node.ts";
import type { Volume } from "../../contract/volume.ts";
import { type LocalControlPlane, startLocalControlPlane } from "../../functions/local.ts";
import { replicaContainerName } from "../../functions/storage/replica-container.ts";
import { type Azurite, startAzurite } from "../harness/azurite.ts";
import { type FaultProxy, startFaultProxy } from "../harness/fault-proxy.ts";
import { ensureBundleBuilt } from "../infra/installer.ts";

export interface ReplicaCluster {
  dir: string;
  azurite: Azurite;
  cp: LocalControlPlane;
  api: ApiClient;
  /** Straight to Azurite, for reading blobs behind the agent's back. */
  blobs: BlobServiceClient;
  /**
   * A replica's page blob, straight from Azurite: alone in a container of
   * its own, named after its pool's (`<pool>-disks`, for pools a test adds
   * too).
   */
  blobOf(volume: Pick<Volume, "name">, replica: { pool: string; id: string }): PageBlobClient;
  proxies: FaultProxy[];
  joinToken: string;
  /** The agent's state directory. */
  stateDir: string;
  /** A connection string for the Azurite account whose blob endpoint is `proxy`. */
  via(proxy: FaultProxy): string;
  /** `pagedisk agent run` arguments for the node. */
  agentArgs(): string[];
  /**
   * Read `read()` after each sweeper pass until `done` holds: the control
   * plane and the agent move on their own (the agent reports when what it
   * serves changes), and each pass is a moment where something may have
   * changed.
   */
  untilPass<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string): Promise<T>;
  /** Proxies, control plane, Azurite and the directory (the agent must be stopped first). */
  close(): Promise<void>;
}

export async function startReplicaCluster(
  prefix: string,
  node: string,
  proxyCount: number,
): Promise<ReplicaCluster> {
  await ensureBundleBuilt();
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const azurite = await startAzurite({ table: true });
  const proxies = await Promise.all(
    Array.from({ length: proxyCount }, () => startFaultProxy(azurite.blobEndpoint)),
  );
  const cp = await startLocalControlPlane({
    connectionString: azurite.connectionString,
    env: {
      PAGEDISK_HEARTBEAT_INTERVAL_SECONDS: "1",
      PAGEDISK_POOL_SUSPECT_WINDOW_SECONDS: "2",
      PAGEDISK_POOL_BAD_AFTER_SECONDS: "3600",
      PAGEDISK_POOL_PERMANENT_AFTER_SECONDS: "7200",
    },
    port: 0,
    stateDir: join(dir, "cp"),
    sweepIntervalMs: 250,
    log: () => {},
  });
  const api = new ApiClient({ apiUrl: cp.apiUrl, apiKey: cp.adminKey });
  const via = (proxy: FaultProxy) =>
    `DefaultEndpointsProtocol=http;AccountName=${azurite.accountName};` +
    `AccountKey=${azurite.accountKey};BlobEndpoint=${proxy.blobEndpoint};`;
  await api.createPool({ name: "pa", container: "pa-disks", auth: { kind: "connectionString", connectionString: azurite.connectionString } });
  await api.createPool({ name: "pb", container: "pb-disks", auth: { kind: "connectionString", connectionString: via(proxies[0]!) } });
  const stateDir = join(dir, node);
  const blobs = BlobServiceClient.fromConnectionString(azurite.connectionString);
  return {
    dir,
    azurite,
    cp,
    api,
    blobs,
    blobOf: (volume, replica) =>
      blobs
        .getContainerClient(replicaContainerName(`${replica.pool}-disks`, replica.id))
        .getPageBlobClient(`${volume.name}/${replica.id}`),
    proxies,
    joinToken: (await api.createToken()).token,
    stateDir,
    via,
    agentArgs: () => [
      "--control-plane",
      new URL(cp.apiUrl).origin,
      "--state-dir",
      stateDir,
      "--name",
      node,
      "--kernel",
      "none",
      "--dirty-granularity",
      "64KiB",
    ],
    async untilPass(read, done, what) {
      for (let pass = 0; pass < 600; pass++) {
        const value = await read();
        if (done(value)) return value;
        await cp.nextPass();
      }
      throw new Error(`still waiting for ${what} after 600 sweeper passes`);
    },
    async close() {
      await cp.close();
      await Promise.all(proxies.map((p) => p.close()));
      await azurite.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A volume as the agent's status API shows it now (its unix socket in `stateDir`). */
export function agentStatusOf(
  stateDir: string,
  volume: string,
): Promise<{ state: string; replicas: Array<ReplicaReport & { pool: string }> } | undefined> {
  return new Promise((done, fail) => {
    const req = httpGet({ socketPath: join(stateDir, "status.sock"), path: "/volumes" }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () => {
        const body = JSON.parse(text) as {
          items: Array<{ name: string; state: string; replicas: Array<ReplicaReport & { pool: string }> }>;
        };
        done(body.items.find((i) => i.name === volume));
      });
    });
    req.on("error", fail);
  });
}
