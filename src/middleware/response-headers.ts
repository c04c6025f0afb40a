import type { Context } from "hono";

/**
 * Sets (or, with `append`, appends to) headers on the response a handler
 * produced. Once a response is final, Hono's `c.header()` copies the whole
 * Response for every header it sets (four copies per API request from the
 * middleware alone). Our own responses have mutable headers and are changed
 * in place; an immutable one (a fetched response passed through) is copied
 * once, with all the headers.
 */
export function setResponseHeaders(
  c: Context,
  headers: Record<string, string>,
  options: { append?: boolean } = {},
): void {
  const entries = Object.entries(headers);
  if (!c.finalized) {
    for (const [name, value] of entries) c.header(name, value, options);
    return;
  }
  const apply = (target: Headers) => {
    for (const [name, value] of entries) {
      if (options.append) target.append(name, value);
      else target.set(name, value);
    }
  };
  try {
    apply(c.res.headers);
  } catch {
    const copy = new Response(c.res.body, c.res);
    apply(copy.headers);
    c.res = copy;
  }
}
