/**
 * HTTP/1.1 over a bare socket (node:net), for what a client library hides:
 * pipelined requests on one connection, the `Connection` header of each
 * answer, whether the server closed, and refusals node:http makes before
 * any app sees the request.
 */
import { connect } from "node:net";
import { expect } from "vitest";

export interface RawResponse {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: string;
}

export interface RawExchange {
  /** Every whole answer read, in order. */
  responses: RawResponse[];
  /** The server closed the connection (rather than this client, once it had its answers). */
  closedByServer: boolean;
}

export type RawTarget = { port: number; host?: string } | { path: string };

/**
 * Open a connection to `target`, write `chunks` one after the other, and
 * read answers until `answers` whole ones have come (then close) or the
 * server closes. A write the server no longer reads (it closed) is no error.
 */
export function exchange(
  target: RawTarget,
  chunks: ReadonlyArray<string | Buffer>,
  answers: number,
): Promise<RawExchange> {
  return new Promise((resolve, reject) => {
    const socket =
      "path" in target ? connect(target.path) : connect(target.port, target.host ?? "127.0.0.1");
    let received = Buffer.alloc(0);
    const responses: RawResponse[] = [];
    let done = false;
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve({ responses, closedByServer });
    };
    socket.on("data", (data: Buffer) => {
      received = Buffer.concat([received, data]);
      for (;;) {
        const parsed = parseOne(received);
        if (!parsed) break;
        responses.push(parsed.response);
        received = received.subarray(parsed.length);
      }
      if (responses.length >= answers) finish(false);
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      // Writing what the server will not read any more; what it answered is still read.
      if (err.code !== "EPIPE" && err.code !== "ECONNRESET") reject(err);
    });
    socket.on("close", () => finish(true));
    for (const chunk of chunks) socket.write(chunk);
  });
}

/** The first whole answer in `data` and how many bytes it took, or undefined if it is not all there. */
function parseOne(data: Buffer): { response: RawResponse; length: number } | undefined {
  const end = data.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const [statusLine = "", ...lines] = data.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1]);
  if (!Number.isInteger(status)) throw new Error(`not an HTTP answer: ${statusLine}`);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  // The servers here send a Content-Length with every body; node's bare refusals have neither.
  const length = Number(headers["content-length"] ?? 0);
  if (headers["transfer-encoding"]) throw new Error(`chunked answers are not read here: ${statusLine}`);
  const bodyStart = end + 4;
  if (data.length < bodyStart + length) return undefined;
  const body = data.subarray(bodyStart, bodyStart + length).toString("utf8");
  return { response: { status, headers, body }, length: bodyStart + length };
}

/** A request's head: request line, `Host`, the given headers, blank line. */
export function head(requestLine: string, headers: Record<string, string | number> = {}): string {
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `${requestLine}\r\nHost: test\r\n${lines.join("")}\r\n`;
}

/** `body` as one chunked-encoding chunk and the last one. */
export function chunked(body: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`${body.length.toString(16)}\r\n`),
    body,
    Buffer.from("\r\n0\r\n\r\n"),
  ]);
}

/**
 * A first answer that says `Connection: close` must be followed by the
 * server closing; otherwise the second request must be served.
 */
export function expectHonestConnection(got: RawExchange): void {
  const [first, second] = got.responses;
  if (first?.headers.connection?.toLowerCase() === "close") {
    expect(got.closedByServer).toBe(true);
    expect(second).toBeUndefined();
  } else {
    expect(second?.status).toBe(200);
  }
}
