/**
 * Credentials of the data path. Every request carries a SAS query string:
 * either the one the control plane (or the user) put in the blob URL, or one
 * minted here from an account key and renewed before it expires.
 *
 * Why minting instead of signing each request with SharedKey: a SAS is signed
 * once per hour instead of once per request (no HMAC over canonical headers on
 * the hot path), request building stays identical in both modes, and the
 * token is scoped to one blob, so the key itself never travels with I/O.
 */
import {
  BlobSASPermissions,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { type Clock, systemClock } from "./clock.ts";

/** The REST API version we speak; Azurite 3.35 accepts it and so does Azure. */
export const API_VERSION = "2025-11-05";

/** Supplies the SAS query string (without `?`) for the next request. */
export interface SasSource {
  query(): string;
}

/** A SAS given from outside; it is used as is until it expires (then requests get Forbidden). */
export function fixedSas(query: string): SasSource {
  const q = strip(query);
  return { query: () => q };
}

/**
 * A SAS given from outside that can be replaced while the blob is in use:
 * the control plane hands its writer a fresh token before the current one
 * expires, and the next request (a retry included) carries the new one, with
 * no reopen of the blob and no pause of I/O.
 */
export class ReplaceableSas implements SasSource {
  #query: string;

  constructor(query: string) {
    this.#query = strip(query);
  }

  query(): string {
    return this.#query;
  }

  /** Use `query` from the next request on. */
  replace(query: string): void {
    this.#query = strip(query);
  }
}

function strip(query: string): string {
  return query.replace(/^\?/, "");
}

export interface MintedSasOptions {
  /** How long each minted token is valid. */
  lifetimeMs?: number;
  /** Mint a new token when the current one has less than this left. */
  renewBeforeMs?: number;
  /** Backdate the start time to tolerate clock skew with the service. */
  skewMs?: number;
  clock?: Clock;
}

const HOUR = 3_600_000;
const MINUTE = 60_000;

/**
 * A blob-scoped SAS (read, create, write) minted from an account key, with
 * a fresh one minted shortly before the current one expires.
 */
export class SharedKeySas implements SasSource {
  readonly #credential: StorageSharedKeyCredential;
  readonly #container: string;
  readonly #blob: string;
  readonly #lifetimeMs: number;
  readonly #renewBeforeMs: number;
  readonly #skewMs: number;
  readonly #clock: Clock;
  #query = "";
  #expiresAt = 0;

  constructor(
    accountName: string,
    accountKey: string,
    container: string,
    blob: string,
    opts: MintedSasOptions = {},
  ) {
    this.#credential = new StorageSharedKeyCredential(accountName, accountKey);
    this.#container = container;
    this.#blob = blob;
    this.#lifetimeMs = opts.lifetimeMs ?? HOUR;
    this.#renewBeforeMs = Math.min(opts.renewBeforeMs ?? 15 * MINUTE, this.#lifetimeMs / 2);
    this.#skewMs = opts.skewMs ?? 5 * MINUTE;
    this.#clock = opts.clock ?? systemClock;
  }

  /** When the current token expires (ms since epoch); 0 before the first mint. */
  get expiresAt(): number {
    return this.#expiresAt;
  }

  query(): string {
    const now = this.#clock.now();
    if (now >= this.#expiresAt - this.#renewBeforeMs) this.#mint(now);
    return this.#query;
  }

  #mint(now: number): void {
    const expiresAt = now + this.#lifetimeMs;
    this.#query = generateBlobSASQueryParameters(
      {
        containerName: this.#container,
        blobName: this.#blob,
        permissions: BlobSASPermissions.parse("rcw"),
        startsOn: new Date(now - this.#skewMs),
        expiresOn: new Date(expiresAt),
        version: API_VERSION,
      },
      this.#credential,
    ).toString();
    this.#expiresAt = expiresAt;
  }
}
