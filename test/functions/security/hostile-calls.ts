/**
 * The raw REST calls a hostile node makes on a replica blob with nothing
 * but the SAS URL it was given, shared by the suites that check when such a
 * URL stops working (hostile-node.test.ts, policy-propagation.test.ts).
 */

const VERSION = "2021-08-06";

/** One raw REST call on the blob at `url` (its SAS included) with `query` and `headers`; its status. */
export async function call(
  url: string,
  method: string,
  query: string,
  headers: Record<string, string> = {},
  body?: Uint8Array,
): Promise<number> {
  const res = await fetch(`${url}${query ? `&${query}` : ""}`, {
    method,
    headers: { "x-ms-version": VERSION, ...(body ? {} : { "content-length": "0" }), ...headers },
    ...(body ? { body } : {}),
  });
  await res.arrayBuffer();
  return res.status;
}

/** One 512-byte page filled with `fill`. */
export const page = (fill: number) => new Uint8Array(512).fill(fill);

/** Put Page of `data` (512 bytes) at offset 0 with `url`, carrying lease `leaseId` when given; its status. */
export function putFirstPage(url: string, data: Uint8Array, leaseId?: string): Promise<number> {
  return call(
    url,
    "PUT",
    "comp=page",
    {
      "x-ms-page-write": "update",
      "x-ms-range": "bytes=0-511",
      "content-length": "512",
      ...(leaseId === undefined ? {} : { "x-ms-lease-id": leaseId }),
    },
    data,
  );
}

/**
 * What a hostile holder of `url` tries, in an order where each step would
 * do harm if it worked, with the status each call got.
 */
export async function hostileCalls(url: string): Promise<Record<string, number>> {
  return {
    breakLease: await call(url, "PUT", "comp=lease", {
      "x-ms-lease-action": "break",
      "x-ms-lease-break-period": "0",
    }),
    acquireLease: await call(url, "PUT", "comp=lease", {
      "x-ms-lease-action": "acquire",
      "x-ms-lease-duration": "-1",
    }),
    writeWithoutLease: await putFirstPage(url, page(0xee)),
    resize: await call(url, "PUT", "comp=properties", { "x-ms-blob-content-length": "512" }),
    snapshot: await call(url, "PUT", "comp=snapshot"),
    setMetadata: await call(url, "PUT", "comp=metadata", { "x-ms-meta-pagediskoffline": "x" }),
    read: await call(url, "GET", "", { "x-ms-range": "bytes=0-511" }),
    delete: await call(url, "DELETE", "", { "x-ms-delete-snapshots": "include" }),
  };
}

/** `hostileCalls` once the URL is dead: every call refused. */
export const REFUSED = {
  breakLease: 403,
  acquireLease: 403,
  writeWithoutLease: 403,
  resize: 403,
  snapshot: 403,
  setMetadata: 403,
  read: 403,
  delete: 403,
};
