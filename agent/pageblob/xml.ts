/**
 * The two XML documents the page blob path reads: the <PageList> of Get Page
 * Ranges and the <Error> body of a failed request. Both are flat and fixed by
 * the REST API, so a purpose-made scanner replaces a general XML parser.
 */

/** A byte range [offset, offset + length). */
export interface ByteRange {
  offset: number;
  length: number;
}

/** One response of Get Page Ranges. */
export interface PageList {
  /** Ranges holding data, in order. */
  pages: ByteRange[];
  /** Ranges cleared since a snapshot (only with prevsnapshot; kept for completeness). */
  clears: ByteRange[];
  /** Continuation marker when the service paginated; undefined on the last page. */
  nextMarker: string | undefined;
}

const RANGE = /<(PageRange|ClearRange)>\s*<Start>(\d+)<\/Start>\s*<End>(\d+)<\/End>\s*<\/\1>/g;
const NEXT_MARKER = /<NextMarker>([^<]*)<\/NextMarker>/;

/** Parse a Get Page Ranges body; Start/End are inclusive byte offsets on the wire. */
export function parsePageList(xml: string): PageList {
  if (!xml.includes("<PageList")) throw new SyntaxError("not a PageList document");
  const pages: ByteRange[] = [];
  const clears: ByteRange[] = [];
  for (const m of xml.matchAll(RANGE)) {
    const start = Number(m[2]);
    const end = Number(m[3]);
    if (end < start) throw new SyntaxError(`page range ${start}-${end} is inverted`);
    (m[1] === "PageRange" ? pages : clears).push({ offset: start, length: end - start + 1 });
  }
  const marker = NEXT_MARKER.exec(xml)?.[1];
  return { pages, clears, nextMarker: marker ? decodeEntities(marker) : undefined };
}

/** Code and Message of an Azure Storage <Error> body, when there is one. */
export function parseErrorBody(xml: string): { code?: string; message?: string } {
  const code = /<Code>([^<]*)<\/Code>/.exec(xml)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(xml)?.[1];
  const out: { code?: string; message?: string } = {};
  if (code) out.code = decodeEntities(code);
  // The message carries RequestId and Time on extra lines; the first line is the useful part.
  if (message) out.message = decodeEntities(message).split("\n")[0]!.trim();
  return out;
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e.startsWith("#x")) return String.fromCodePoint(Number.parseInt(e.slice(2), 16));
    if (e.startsWith("#")) return String.fromCodePoint(Number.parseInt(e.slice(1), 10));
    return ENTITIES[e]!;
  });
}
