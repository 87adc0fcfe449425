/**
 * The app on plain node:http (local.ts), with the two things neither
 * node:http nor @hono/node-server does in the API's way.
 *
 * - An answer ready before the request's body has arrived in full (a 413,
 *   a 401 on a POST) says `Connection: close`, and the connection closes
 *   after it. Left alone, it says keep-alive, but once the app has touched
 *   the body stream (the body limit does, for every POST) node can no
 *   longer discard the rest itself: @hono/node-server drains it for half a
 *   second at most and then drops the connection, so the client's next
 *   request on it fails, or is answered and then cut off. An answer whose
 *   request arrived in full keeps the connection.
 * - Requests node:http refuses before the app sees them (headers over its
 *   limit, malformed HTTP, a request too slow to arrive) are answered in
 *   the API's error shape, `Connection: close`, instead of node's bare
 *   status line.
 *
 * Under Azure Functions the host, not this code, holds the client's
 * connection and parses its request, so neither applies there.
 */
import { IncomingMessage, type Server, STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { Http2Bindings, HttpBindings } from "@hono/node-server";
import { type ApiErrorCode, ERROR_STATUS } from "../../contract/errors.ts";
import { ApiError } from "./api-error.ts";

/** A fetch handler as @hono/node-server calls it. */
export type NodeFetch = (
  request: Request,
  env: HttpBindings | Http2Bindings,
) => Response | Promise<Response>;

/** `fetch`, closing the connection after any answer given before the request's body arrived. */
export function closeOnUnreadBody(fetch: NodeFetch): NodeFetch {
  return async function fetchClosingOnUnreadBody(request, env) {
    const response = await fetch(request, env);
    // `complete`: node has parsed the whole request, body included. Whatever of it the app did
    // not read is then discarded by node, and the next request on the connection is parsed.
    // (HTTP/2, which these servers do not speak, has no Connection header and ends streams alone.)
    if (env.incoming instanceof IncomingMessage && !env.incoming.complete) {
      env.outgoing.setHeader("Connection", "close");
    }
    return response;
  };
}

/** node:http's parser errors, by the answer they get; any other `HPE_` code is malformed HTTP. */
const REFUSALS: Record<string, { code: ApiErrorCode; message: string }> = {
  HPE_HEADER_OVERFLOW: {
    code: "HeadersTooLarge",
    message: "request headers exceed the server's limit",
  },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: {
    code: "PayloadTooLarge",
    message: "chunk extensions exceed the server's limit",
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    code: "RequestTimeout",
    message: "the request did not arrive in full in time",
  },
};

/** Answer requests node:http refuses itself with the API's error body (see the header). */
export function answerClientErrors(server: Server): void {
  server.on("clientError", function answerClientError(err: NodeJS.ErrnoException, socket: Duplex) {
    const code = err.code ?? "";
    const refusal =
      REFUSALS[code] ??
      (code.startsWith("HPE_")
        ? { code: "MalformedRequest" as const, message: `malformed HTTP request (${code})` }
        : undefined);
    sendRefusal(socket, refusal && new ApiError(refusal.code, refusal.message));
  });
}

/**
 * Write `error` as a whole HTTP answer and close, as node's own handler does
 * (a connection reset, or an answer already begun, just closes).
 */
function sendRefusal(socket: Duplex, error: ApiError | undefined): void {
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (!error || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(error.toBody());
  const status: number = ERROR_STATUS[error.code];
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\n` +
      "Content-Type: application/json\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      "Connection: close\r\n\r\n" +
      body,
    () => socket.destroy(),
  );
}
