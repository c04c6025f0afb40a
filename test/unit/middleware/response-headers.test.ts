import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { setResponseHeaders } from "../../../src/middleware/response-headers.ts";

/** Headers set after the handler: in place when the response allows it, one copy when it does not. */

function appWith(handler: () => Response) {
  const seen: { same?: boolean } = {};
  const app = new Hono();
  app.use("*", async (c, next) => {
    await next();
    const before = c.res;
    setResponseHeaders(c, { "X-One": "1", "X-Two": "2" });
    seen.same = c.res === before;
  });
  app.get("/", handler);
  return { app, seen };
}

describe("setResponseHeaders", () => {
  it("sets headers on our own response in place, without copying it", async () => {
    const { app, seen } = appWith(
      () => new Response("body", { status: 201, headers: { "Content-Type": "text/plain" } }),
    );
    const response = await app.request("/");
    expect(seen.same).toBe(true);
    expect(response.status).toBe(201);
    expect(Object.fromEntries(response.headers)).toMatchObject({
      "x-one": "1",
      "x-two": "2",
      "content-type": "text/plain",
    });
    expect(await response.text()).toBe("body");
  });

  it("copies a response whose headers are immutable once, keeping its status, headers and body", async () => {
    const { app, seen } = appWith(() => Response.redirect("https://example.com/next", 302));
    const response = await app.request("/");
    expect(seen.same).toBe(false);
    expect(response.status).toBe(302);
    expect(response.headers.get("Location")).toBe("https://example.com/next");
    expect(response.headers.get("X-Two")).toBe("2");
  });

  it("appends with `append`, in place and on an immutable response alike", async () => {
    const cases: [() => Response, string][] = [
      [() => new Response("body", { headers: { Vary: "Accept" } }), "Accept, Origin"],
      [() => Response.redirect("https://example.com/next", 302), "Origin"],
    ];
    for (const [handler, vary] of cases) {
      const app = new Hono();
      app.use("*", async (c, next) => {
        await next();
        setResponseHeaders(c, { Vary: "Origin" }, { append: true });
      });
      app.get("/", handler);
      const response = await app.request("/");
      expect(response.headers.get("Vary")).toBe(vary);
      expect(response.status).toBe(handler().status);
    }
  });
});
