/**
 * What node:http refuses before the status app sees a request (headers over
 * its limit, malformed HTTP, a request too slow to arrive) is answered as
 * `{ "error": { "code", "message" } }`, `Connection: close`, instead of
 * node's bare status line. The control plane's local server does the same
 * (functions/http/node-edge.ts); the halves share no code, so it is
 * written twice, short.
 *
 * An answer given before a request's body has arrived (a 405 to a POST)
 * needs nothing here: the app never touches a body, so node reads and
 * discards it and the connection serves the next request. (The control
 * plane's body limit does touch it, which is why its edge closes.)
 */
import { type Server, STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";

/** Codes of the refusals made here, before the app (app.ts has the app's own). */
export type EdgeErrorCode = "HeadersTooLarge" | "MalformedRequest" | "RequestTimeout" | "PayloadTooLarge";

interface Refusal {
  status: number;
  code: EdgeErrorCode;
  message: string;
}

/** node:http's parser errors, by the answer they get; any other `HPE_` code is malformed HTTP. */
const REFUSALS: Record<string, Refusal> = {
  HPE_HEADER_OVERFLOW: {
    status: 431,
    code: "HeadersTooLarge",
    message: "request headers exceed the server's limit",
  },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: {
    status: 413,
    code: "PayloadTooLarge",
    message: "chunk extensions exceed the server's limit",
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    code: "RequestTimeout",
    message: "the request did not arrive in full in time",
  },
};

/** Answer requests node:http refuses itself in the error shape (see the header). */
export function answerClientErrors(server: Server): void {
  server.on("clientError", function answerClientError(err: NodeJS.ErrnoException, socket: Duplex) {
    const code = err.code ?? "";
    const refusal: Refusal | undefined =
      REFUSALS[code] ??
      (code.startsWith("HPE_")
        ? { status: 400, code: "MalformedRequest", message: `malformed HTTP request (${code})` }
        : undefined);
    // A connection reset, or an answer already begun: just close, as node's own handler does.
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (!refusal || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const body = JSON.stringify({ error: { code: refusal.code, message: refusal.message } });
    socket.end(
      `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? ""}\r\n` +
        "Content-Type: application/json\r\n" +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        "Connection: close\r\n\r\n" +
        body,
      () => socket.destroy(),
    );
  });
}
