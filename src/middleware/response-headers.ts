import type { Context } from "hono";

/**
 * Sets headers on the response a handler produced. Once a response is final,
 * Hono's `c.header()` copies the whole Response for every header it sets
 * (four copies per API request from the middleware alone). Our own responses
 * have mutable headers and are set in place; an immutable one (a fetched
 * response passed through) is copied once, with all the headers.
 */
export function setResponseHeaders(c: Context, headers: Record<string, string>): void {
  const entries = Object.entries(headers);
  if (!c.finalized) {
    for (const [name, value] of entries) c.header(name, value);
    return;
  }
  try {
    for (const [name, value] of entries) c.res.headers.set(name, value);
  } catch {
    const copy = new Response(c.res.body, c.res);
    for (const [name, value] of entries) copy.headers.set(name, value);
    c.res = copy;
  }
}

/** Appends to a header (e.g. `Vary`) of the handler's response, in place like setResponseHeaders. */
export function appendResponseHeader(c: Context, name: string, value: string): void {
  if (!c.finalized) {
    c.header(name, value, { append: true });
    return;
  }
  try {
    c.res.headers.append(name, value);
  } catch {
    const copy = new Response(c.res.body, c.res);
    copy.headers.append(name, value);
    c.res = copy;
  }
}
