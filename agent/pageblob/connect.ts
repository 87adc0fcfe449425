/**
 * From what the user gives (a blob URL with a SAS, or a blob name plus a
 * connection string) to a ready `PageBlob` on the shared pool.
 */
import { type BlobLocation, parseConnectionString, resolveBlob } from "./location.ts";
import { PageBlob } from "./page-blob.ts";
import { fixedSas, type MintedSasOptions, type SasSource, SharedKeySas } from "./sas.ts";
import { BlobTransport, type TransportOptions } from "./transport.ts";

export interface OpenOptions extends TransportOptions {
  /** Azure Storage connection string; Azurite's development account works. */
  connectionString?: string | undefined;
  /** Lifetime and renewal of SAS tokens minted from an account key. */
  mintedSas?: MintedSasOptions;
}

/**
 * Open a client for the blob named by `spec`: a blob URL (its SAS, if any,
 * is the credential) or `container/blob` under the connection string's blob
 * endpoint. A connection string with an account key mints blob-scoped SAS
 * tokens, so the data path is always SAS.
 */
export function openPageBlob(spec: string, opts: OpenOptions = {}): PageBlob {
  const account = opts.connectionString ? parseConnectionString(opts.connectionString) : undefined;
  const location = resolveBlob(spec, account);
  let sas: SasSource;
  if (location.sas) sas = fixedSas(location.sas);
  else if (account?.accountKey) sas = mintedSas(location, account.accountKey, opts);
  else if (account?.sas) sas = fixedSas(account.sas);
  else
    throw new SyntaxError(
      `no credential for ${location.origin}${location.path}: give a SAS URL or a connection string`,
    );
  return new PageBlob(new BlobTransport(location, sas, opts));
}

function mintedSas(location: BlobLocation, key: string, opts: OpenOptions): SasSource {
  const clock = opts.mintedSas?.clock ?? opts.clock;
  return new SharedKeySas(location.account, key, location.container, location.blob, {
    ...opts.mintedSas,
    ...(clock ? { clock } : {}),
  });
}
