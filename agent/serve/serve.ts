/**
 * `pagedisk serve`: one page blob (or RAM) exported over NBD, with no control
 * plane. Owns the process lifecycle: open, lease, serve, and on SIGTERM/SIGINT
 * stop accepting, drain, flush, release, exit 0; on a failed volume log the
 * event, remove the export and exit 2.
 */
import { MemoryBackend } from "../engine/memory.ts";
import { PageBlobBackend } from "../engine/pageblob-backend.ts";
import type { Logger } from "../log.ts";
import type { BlockDevice } from "../nbd/device.ts";
import { openPageBlob } from "../pageblob/connect.ts";
import { StorageError } from "../pageblob/errors.ts";
import type { PageBlob } from "../pageblob/page-blob.ts";
import {
  type LeaseMode,
  nbdUri,
  parseLease,
  parseListen,
  parseTarget,
  type Target,
  UsageError,
} from "./args.ts";
import { stopSignal } from "./signals.ts";
import { ExportListenError, exportVolume, type ServeLimits, type VolumeExport } from "./export.ts";

/** Exit codes of `pagedisk serve`. */
export const EXIT = { ok: 0, startup: 1, volumeFailed: 2 } as const;

export interface ServeOptions {
  listen: string;
  create?: boolean;
  /** Bytes; required with `create`. */
  size?: number;
  lease?: string;
  readOnly?: boolean;
  exportName?: string;
  /** The CLI fills it from PAGEDISK_STORAGE_CONNECTION_STRING when not given. */
  connectionString?: string;
  throttlePauseMs?: number;
  deadlineMs?: number;
  /** NBD memory and connection bounds; the defaults when absent. */
  limits?: ServeLimits;
  /** Where the human line goes (stdout). */
  print: (line: string) => void;
  log: Logger;
}

interface Opened {
  backend: BlockDevice;
  blob?: PageBlob;
  /** The lease we took and must release on exit. */
  ownLease?: string;
  name: string;
  describe: string;
}

/** Run until a signal or a volume failure; resolves with the exit code. */
export async function serve(targetText: string, opts: ServeOptions): Promise<number> {
  const target = parseTarget(targetText);
  const listen = parseListen(opts.listen);
  const lease = resolveLeaseMode(target, opts);
  // Before taking anything: a signal during startup ends in the same clean stop (lease released).
  const stopped = stopSignal(EXIT.startup);
  const opened = await open(target, lease, opts);
  const { log } = opts;

  let failed: ((code: number) => void) | undefined;
  const failedOnce = new Promise<number>((res) => {
    failed = res;
  });
  let served: VolumeExport;
  try {
    served = await exportVolume(opened.backend, {
      name: opened.name,
      description: opened.describe,
      listen,
      log,
      ...(opts.limits ? { limits: opts.limits } : {}),
      onFailed: (event) => {
        log.error({ ...event, volume: opened.name }, "volume failed");
        failed?.(EXIT.volumeFailed);
      },
      onEvent: (event) => log.warn({ ...event, volume: opened.name }, "storage throttling"),
      throttle: {
        ...(opts.throttlePauseMs !== undefined ? { pauseMs: opts.throttlePauseMs } : {}),
        ...(opts.deadlineMs !== undefined ? { deadlineMs: opts.deadlineMs } : {}),
      },
    });
  } catch (err) {
    await releaseLease(opened, log);
    if (err instanceof ExportListenError) {
      throw new UsageError(`cannot listen on ${opts.listen}: ${err.message}`);
    }
    throw err;
  }
  const { volume, address: bound } = served;
  const uri = nbdUri(bound, opened.name);
  log.info({ export: opened.name, size: volume.size, readOnly: volume.readOnly, uri }, "serving");
  opts.print(
    `pagedisk: serving ${opened.describe} (${volume.size} bytes${volume.readOnly ? ", read-only" : ""}) at ${uri}`,
  );

  const outcome = await Promise.race([stopped, failedOnce]);
  if (typeof outcome === "number") {
    // Failed: every request already gets EIO; take the export away, keep nothing.
    await served.fail();
    // Only a deadline failure may still hold a valid lease worth giving back.
    if (volume.failure?.reason !== "retry-deadline") delete opened.ownLease;
    await releaseLease(opened, log);
    return outcome;
  }
  log.info({ signal: outcome }, "stopping: draining connections");
  let code: number = EXIT.ok;
  const flushError = await served.drain();
  if (flushError) {
    log.error({ err: flushError }, "final flush failed");
    code = EXIT.volumeFailed;
  }
  if (volume.failure) {
    code = EXIT.volumeFailed;
    delete opened.ownLease;
  }
  await releaseLease(opened, log);
  log.info({ code }, "stopped");
  return code;
}

function resolveLeaseMode(target: Target, opts: ServeOptions): LeaseMode {
  if (target.kind === "memory") {
    if (opts.lease && opts.lease !== "none") throw new UsageError("--lease applies to blobs, not memory:");
    if (opts.create) throw new UsageError("--create applies to blobs; memory:SIZE is always new");
    return { mode: "none" };
  }
  if (opts.create && opts.size === undefined) throw new UsageError("--create needs --size");
  if (!opts.create && opts.size !== undefined) throw new UsageError("--size is only used with --create");
  const lease = parseLease(opts.lease ?? "auto");
  // A reader needs no lease: reads succeed whoever holds it.
  if (opts.readOnly && lease.mode === "auto") return { mode: "none" };
  return lease;
}

async function open(target: Target, lease: LeaseMode, opts: ServeOptions): Promise<Opened> {
  if (target.kind === "memory") {
    const name = opts.exportName ?? "memory";
    return {
      backend: new MemoryBackend({ size: target.size, readOnly: opts.readOnly ?? false }),
      name,
      describe: `memory:${target.size}`,
    };
  }
  const shown = `${target.url.origin}${target.url.pathname}`;
  const { connectionString } = opts;
  let blob: PageBlob;
  try {
    blob = openPageBlob(target.url.href, connectionString ? { connectionString } : {});
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  try {
    if (opts.create) await createOrCheck(blob, opts.size!, shown);
    const props = await blob.properties();
    let ownLease: string | undefined;
    let leaseId: string | undefined;
    if (lease.mode === "auto") {
      if (props.leaseState === "leased") {
        throw new UsageError(
          `${shown} is leased by another writer; pass --lease <id> if it is yours, or break the lease first`,
        );
      }
      ownLease = await blob.acquireLease(-1);
      leaseId = ownLease;
    } else if (lease.mode === "given") leaseId = lease.leaseId;
    const backend = new PageBlobBackend(blob, props.size, {
      readOnly: opts.readOnly ?? false,
      leaseId,
      // We still need the client after the volume closes, to release the lease.
      ownsBlob: false,
    });
    const name = opts.exportName ?? decodeURIComponent(target.url.pathname.split("/").pop() ?? "");
    return {
      backend,
      blob,
      ...(ownLease ? { ownLease } : {}),
      name,
      describe: shown,
    };
  } catch (err) {
    await blob.close().catch(() => {});
    throw explain(err, shown);
  }
}

async function createOrCheck(blob: PageBlob, size: number, shown: string): Promise<void> {
  try {
    await blob.create(size);
  } catch (err) {
    if (!(err instanceof StorageError) || err.azureCode !== "BlobAlreadyExists") throw err;
    const props = await blob.properties();
    if (props.size !== size) {
      throw new UsageError(`${shown} already exists with size ${props.size}, not ${size}`);
    }
  }
}

/** Release the lease we took (if any) and close the blob client. */
async function releaseLease(opened: Opened, log: Logger): Promise<void> {
  if (!opened.blob) return;
  if (opened.ownLease) {
    try {
      await opened.blob.releaseLease(opened.ownLease);
      log.info({ blob: opened.describe }, "lease released");
    } catch (err) {
      log.warn({ err, blob: opened.describe }, "could not release the lease");
    }
  }
  await opened.blob.close().catch(() => {});
}

/** Startup storage errors as messages a user can act on. */
function explain(err: unknown, shown: string): unknown {
  if (!(err instanceof StorageError)) return err;
  switch (err.code) {
    case "BlobGone":
      return new UsageError(`${shown}: no such blob or container (use --create --size to create it)`);
    case "Forbidden":
      return new UsageError(`${shown}: access denied (${err.azureCode ?? err.status}); check the SAS or key`);
    case "LeaseLost":
      return new UsageError(`${shown}: the lease id does not match the blob's lease (${err.azureCode ?? err.status})`);
    default:
      return new UsageError(`${shown}: ${err.message}`);
  }
}
