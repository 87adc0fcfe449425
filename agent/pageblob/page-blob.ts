/**
 * A client for one page blob: the REST calls the block path and the lease
 * handling need, each one request (or a few, for paginated page ranges),
 * each rejecting only with StorageError.
 *
 * Concurrency: calls are independent and may run in parallel; the pool bounds
 * how many are on the wire at once. The one exception: a call that changes
 * what an abandoned attempt may still change waits until that attempt can no
 * longer land (transport.ts, in-doubt.ts).
 */
import { randomUUID } from "node:crypto";
import { StorageError } from "./errors.ts";
import type { BlobLocation } from "./location.ts";
import { type BlobTransport, header, type OkResponse } from "./transport.ts";
import { type ByteRange, parsePageList } from "./xml.ts";

/** Page size of page blobs: every offset and length is a multiple of it. */
export const PAGE_SIZE = 512;
/** Largest Put Page body the service accepts. */
export const MAX_PUT_PAGE = 4 * 1024 * 1024;

/** Lease states as the service names them (x-ms-lease-state). */
export type LeaseState = "available" | "leased" | "expired" | "breaking" | "broken";

export interface BlobProperties {
  size: number;
  etag: string;
  leaseState: LeaseState;
  leaseStatus: "locked" | "unlocked";
  /** Set while leased. */
  leaseDuration: "infinite" | "fixed" | undefined;
  sequenceNumber: number;
  /** User metadata (`x-ms-meta-*`), names lower-cased. */
  metadata: BlobMetadata;
}

/**
 * User metadata of a blob: names are C# identifiers (the service folds them
 * to lower case on the wire here), values printable ASCII.
 */
export type BlobMetadata = Record<string, string>;

/** The lease id to send with a write; omit it only for blobs nobody leases. */
export interface LeaseCondition {
  leaseId?: string | undefined;
}

export interface CreateOptions extends LeaseCondition {
  /** Replace an existing blob (its data is lost). Default: fail with BlobAlreadyExists. */
  overwrite?: boolean;
}

export class PageBlob {
  readonly #t: BlobTransport;

  constructor(transport: BlobTransport) {
    this.#t = transport;
  }

  get location(): BlobLocation {
    return this.#t.location;
  }

  /** The blob URL without credentials, for logs and events. */
  get url(): string {
    return `${this.#t.location.origin}${this.#t.location.path}`;
  }

  /** Put Blob: create an empty (all-zero, unallocated) page blob of `size` bytes. */
  async create(size: number, opts: CreateOptions = {}): Promise<void> {
    checkPages(size, 0, "blob size");
    const headers: Record<string, string> = {
      "x-ms-blob-type": "PageBlob",
      "x-ms-blob-content-length": String(size),
      ...leaseHeader(opts),
    };
    if (!opts.overwrite) headers["if-none-match"] = "*";
    await this.#t.send(
      { method: "PUT", headers, op: `Put Blob ${size}`, touches: { kind: "blob" } },
      drain,
    );
  }

  /** Get Blob Properties. */
  async properties(): Promise<BlobProperties> {
    return this.#t.send({ method: "HEAD", op: "Get Blob Properties" }, async (res) => {
      const type = header(res.headers, "x-ms-blob-type");
      if (type !== "PageBlob") {
        throw new StorageError(
          "Invalid",
          `${this.url} is a ${type ?? "unknown"} blob, not a page blob`,
        );
      }
      const duration = header(res.headers, "x-ms-lease-duration");
      return {
        size: Number(header(res.headers, "content-length") ?? Number.NaN),
        etag: header(res.headers, "etag") ?? "",
        leaseState: (header(res.headers, "x-ms-lease-state") ?? "available") as LeaseState,
        leaseStatus: header(res.headers, "x-ms-lease-status") === "locked" ? "locked" : "unlocked",
        leaseDuration: duration === "infinite" || duration === "fixed" ? duration : undefined,
        sequenceNumber: Number(header(res.headers, "x-ms-blob-sequence-number") ?? 0),
        metadata: metadataOf(res.headers),
      };
    });
  }

  /**
   * Set Blob Metadata: replaces all of the blob's user metadata with
   * `metadata` (names not given are removed). A leased blob needs the lease
   * id; a wrong one is LeaseLost, as for a write. Values must be printable
   * ASCII, not empty, without surrounding spaces (else Invalid, nothing sent).
   */
  async setMetadata(metadata: BlobMetadata, opts: LeaseCondition = {}): Promise<void> {
    const headers: Record<string, string> = { ...leaseHeader(opts) };
    for (const [name, value] of Object.entries(metadata)) {
      if (!METADATA_NAME.test(name) || !METADATA_VALUE.test(value)) {
        throw new StorageError("Invalid", `metadata ${JSON.stringify(name)}=${JSON.stringify(value)} cannot be sent`);
      }
      headers[`x-ms-meta-${name.toLowerCase()}`] = value;
    }
    await this.#t.send(
      {
        method: "PUT",
        query: "comp=metadata",
        headers,
        op: "Set Blob Metadata",
        touches: { kind: "metadata" },
      },
      drain,
    );
  }

  /**
   * Set Blob Properties with a new content length. Shrinking discards the
   * pages past the end. (Like every Set Blob Properties call, it also clears
   * the blob's content headers, which a disk does not use.)
   */
  async resize(size: number, opts: LeaseCondition = {}): Promise<void> {
    checkPages(size, 0, "blob size");
    await this.#t.send(
      {
        method: "PUT",
        query: "comp=properties",
        headers: { "x-ms-blob-content-length": String(size), ...leaseHeader(opts) },
        op: `Resize ${size}`,
        // A late shrink would discard pages written after it: it touches them all.
        touches: { kind: "pages", start: 0, end: Number.POSITIVE_INFINITY },
      },
      drain,
    );
  }

  /**
   * Put Page (update): write `data` at `offset`; both 512-aligned, at most
   * 4 MiB. An attempt left in doubt is not resent here: the call fails
   * Transient with a Retry-After that covers the doubt, for the engine to
   * retry (and until then any write to those pages waits here). So does
   * Clear Pages.
   */
  async putPages(offset: number, data: Uint8Array, opts: LeaseCondition = {}): Promise<void> {
    checkPages(offset, data.length, "Put Page");
    if (data.length === 0 || data.length > MAX_PUT_PAGE) {
      throw new StorageError("Invalid", `Put Page of ${data.length} bytes (must be 512 B..4 MiB)`);
    }
    await this.#t.send(
      {
        method: "PUT",
        query: "comp=page",
        headers: {
          "x-ms-page-write": "update",
          "x-ms-range": byteRange(offset, data.length),
          ...leaseHeader(opts),
        },
        body: data,
        op: `Put Page ${offset}+${data.length}`,
        touches: { kind: "pages", start: offset, end: offset + data.length },
        retriedAbove: true,
      },
      drain,
    );
  }

  /** Put Page (clear): the range reads as zeros and stops being allocated. */
  async clearPages(offset: number, length: number, opts: LeaseCondition = {}): Promise<void> {
    checkPages(offset, length, "Clear Pages");
    if (length === 0) return;
    await this.#t.send(
      {
        method: "PUT",
        query: "comp=page",
        headers: {
          "x-ms-page-write": "clear",
          "x-ms-range": byteRange(offset, length),
          ...leaseHeader(opts),
        },
        op: `Clear Pages ${offset}+${length}`,
        touches: { kind: "pages", start: offset, end: offset + length },
        retriedAbove: true,
      },
      drain,
    );
  }

  /**
   * Get Blob for a byte range. Reads need no lease id, even on a leased
   * blob; a writer sends its own anyway (`opts.leaseId`), so that once it is
   * fenced its reads fail too instead of showing the new writer's data
   * under a stale page cache. With `into` (at least `length` bytes) the
   * data lands there and a view of it is returned, sparing an allocation on
   * the hot path.
   */
  async read(
    offset: number,
    length: number,
    into?: Uint8Array,
    opts: LeaseCondition = {},
  ): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    if (into && into.length < length) {
      throw new StorageError("Invalid", `read buffer of ${into.length} bytes for ${length}`);
    }
    const op = `Get Blob ${offset}+${length}`;
    return this.#t.send(
      {
        method: "GET",
        headers: { "x-ms-range": byteRange(offset, length), ...leaseHeader(opts) },
        op,
      },
      async (res) => {
        // Azure answers a range past the end with 416; Azurite with a short 206. Treat both alike.
        const total = /\/(\d+)$/.exec(header(res.headers, "content-range") ?? "")?.[1];
        if (total !== undefined && offset + length > Number(total)) {
          throw new StorageError("Invalid", `${op}: beyond the end of the blob (${total} bytes)`, {
            status: 416,
            azureCode: "InvalidRange",
          });
        }
        const out = into
          ? Buffer.from(into.buffer, into.byteOffset, length)
          : Buffer.allocUnsafe(length);
        let pos = 0;
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          if (pos + chunk.length > length) {
            throw new StorageError("Invalid", `${op}: the service sent more than ${length} bytes`);
          }
          chunk.copy(out, pos);
          pos += chunk.length;
        }
        // A short body is a connection cut mid-response: retriable.
        if (pos !== length)
          throw new StorageError("Transient", `${op}: got ${pos} of ${length} bytes`);
        return out;
      },
    );
  }

  /**
   * Get Page Ranges for [offset, offset + length): the allocated ranges that
   * intersect it, in order, following NextMarker when the service paginates.
   */
  async pageRanges(offset: number, length: number, opts: LeaseCondition = {}): Promise<ByteRange[]> {
    checkPages(offset, length, "Get Page Ranges");
    if (length === 0) return [];
    const ranges: ByteRange[] = [];
    let marker: string | undefined;
    for (;;) {
      const query = `comp=pagelist${marker ? `&marker=${encodeURIComponent(marker)}` : ""}`;
      const list = await this.#t.send(
        {
          method: "GET",
          query,
          headers: { "x-ms-range": byteRange(offset, length), ...leaseHeader(opts) },
          op: `Get Page Ranges ${offset}+${length}`,
        },
        async (res) => parsePageList(await res.body.text()),
      );
      ranges.push(...list.pages);
      if (!list.nextMarker || list.nextMarker === marker) return ranges;
      marker = list.nextMarker;
    }
  }

  /**
   * Lease Blob (acquire). `durationSec` is -1 (infinite) or 15..60. A
   * proposed id is always sent, so a retried acquire whose first answer was
   * lost succeeds instead of finding "its own" lease in the way.
   */
  async acquireLease(durationSec: number, proposedId: string = randomUUID()): Promise<string> {
    return this.#lease(
      "acquire",
      { "x-ms-lease-duration": String(durationSec), "x-ms-proposed-lease-id": proposedId },
      async (res) => {
        await drain(res);
        return header(res.headers, "x-ms-lease-id") ?? proposedId;
      },
    );
  }

  /** Lease Blob (renew): restart the clock of a fixed-duration lease. */
  async renewLease(leaseId: string): Promise<void> {
    await this.#lease("renew", { "x-ms-lease-id": leaseId }, drain);
  }

  /** Lease Blob (release): make the blob available to others at once. */
  async releaseLease(leaseId: string): Promise<void> {
    await this.#lease("release", { "x-ms-lease-id": leaseId }, drain);
  }

  /** Lease Blob (change): switch an active lease to a new id. */
  async changeLease(leaseId: string, proposedId: string): Promise<string> {
    return this.#lease(
      "change",
      { "x-ms-lease-id": leaseId, "x-ms-proposed-lease-id": proposedId },
      async (res) => {
        await drain(res);
        return header(res.headers, "x-ms-lease-id") ?? proposedId;
      },
    );
  }

  /**
   * Lease Blob (break), with no lease id: anyone may break. Returns the
   * seconds until the lease is broken (0: broken now).
   */
  async breakLease(breakPeriodSec = 0): Promise<number> {
    return this.#lease(
      "break",
      { "x-ms-lease-break-period": String(breakPeriodSec) },
      async (res) => {
        await drain(res);
        return Number(header(res.headers, "x-ms-lease-time") ?? 0);
      },
    );
  }

  /** Drop this blob's reference to the shared connection pool. */
  close(): Promise<void> {
    return this.#t.close();
  }

  #lease<T>(
    action: string,
    headers: Record<string, string>,
    read: (res: OkResponse) => Promise<T>,
  ): Promise<T> {
    return this.#t.send(
      {
        method: "PUT",
        query: "comp=lease",
        headers: { "x-ms-lease-action": action, ...headers },
        op: `Lease ${action}`,
        touches: { kind: "lease" },
      },
      read,
    );
  }
}

const META_PREFIX = "x-ms-meta-";
/** A C# identifier, as the service requires of metadata names. */
const METADATA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,254}$/;
/**
 * Printable ASCII, not empty, no surrounding spaces: the service trims
 * them and drops empty values, so a round trip would differ.
 */
const METADATA_VALUE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

function metadataOf(headers: OkResponse["headers"]): BlobMetadata {
  const out: BlobMetadata = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!name.toLowerCase().startsWith(META_PREFIX) || value === undefined) continue;
    out[name.slice(META_PREFIX.length).toLowerCase()] = Array.isArray(value) ? value.join(",") : String(value);
  }
  return out;
}

function leaseHeader(opts: LeaseCondition): Record<string, string> {
  return opts.leaseId ? { "x-ms-lease-id": opts.leaseId } : {};
}

/** x-ms-range is inclusive at both ends. */
function byteRange(offset: number, length: number): string {
  return `bytes=${offset}-${offset + length - 1}`;
}

function checkPages(offset: number, length: number, what: string): void {
  const ok =
    Number.isSafeInteger(offset) &&
    Number.isSafeInteger(length) &&
    offset >= 0 &&
    length >= 0 &&
    offset % PAGE_SIZE === 0 &&
    length % PAGE_SIZE === 0;
  if (!ok) throw new StorageError("Invalid", `${what} ${offset}+${length} is not 512-byte aligned`);
}

async function drain(res: OkResponse): Promise<void> {
  await res.body.dump();
}
