/**
 * The incoming request's abort signal, when the runtime makes it fire.
 *
 * Workers give an incoming request a live `signal` (aborted when the client
 * goes away) only under the `enable_request_signal` compatibility flag, which
 * has no default date. Without it the signal never aborts, and the runtime
 * cancels the handler itself when the client disconnects (a streamed body is
 * cancelled through its ReadableStream). Joining a signal that cannot fire
 * to every upstream attempt's timeout would cost each call an
 * `AbortSignal.any` for nothing, so callers get `undefined` instead.
 */
export function liveRequestSignal(
  request: Request,
  // Outside workerd (Node scripts, other runtimes) there are no flags, and a request's signal is live.
  flags: Record<string, boolean> | null = (globalThis as { Cloudflare?: Cloudflare }).Cloudflare?.compatibilityFlags ??
    null,
): AbortSignal | undefined {
  return !flags || flags.enable_request_signal === true ? request.signal : undefined;
}
