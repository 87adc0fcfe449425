/**
 * The thin edge between the Azure Functions HTTP trigger and the Hono app:
 * the trigger's request becomes a fetch `Request`, `app.fetch` answers, and
 * the `Response` goes back as the trigger's result. Bodies pass through as
 * streams in both directions, so the app's body limit is what bounds memory,
 * and status and headers (repeated ones included) are passed on untouched.
 *
 * The shapes below are the parts of `@azure/functions`' `HttpRequest` and
 * `HttpResponseInit` that the edge uses, written structurally so that this
 * file imports nothing from the platform: only `functions/index.ts` does.
 */

/** What the edge reads from the trigger's request (`HttpRequest` fits). */
export interface TriggerRequest {
  readonly method: string;
  /** Absolute URL as the host received it, e.g. `https://app.azurewebsites.net/api/v1/volumes`. */
  readonly url: string;
  readonly headers: Headers;
  /** The body as a stream; null when there is none. */
  readonly body: ReadableStream<Uint8Array> | null;
}

/** What the edge gives back (`HttpResponseInit` accepts it). */
export interface TriggerResponse {
  status: number;
  headers: Headers;
  body: ReadableStream<Uint8Array> | null;
}

/** Anything that answers fetch requests, e.g. a Hono app's `fetch`. */
export type FetchHandler = (request: Request) => Response | Promise<Response>;

/** Methods whose requests may not carry a body (the fetch `Request` constructor refuses one). */
const BODILESS = new Set(["GET", "HEAD"]);

/** Turn the trigger's request into a fetch `Request`, streaming its body. */
export function toFetchRequest(req: TriggerRequest): Request {
  const method = req.method.toUpperCase();
  const body = BODILESS.has(method) ? null : req.body;
  return new Request(req.url, {
    method,
    headers: req.headers,
    body,
    // A streamed request body must say so; fetch refuses a stream without it.
    ...(body === null ? {} : { duplex: "half" as const }),
  });
}

/** Turn a fetch `Response` into the trigger's result, streaming its body. */
export function fromFetchResponse(res: Response): TriggerResponse {
  return { status: res.status, headers: res.headers, body: res.body };
}

/** An HTTP trigger handler that forwards every request to `handler`. */
export function forwardTo(
  handler: FetchHandler,
): (req: TriggerRequest) => Promise<TriggerResponse> {
  return async function forwardToApp(req) {
    return fromFetchResponse(await handler(toFetchRequest(req)));
  };
}
