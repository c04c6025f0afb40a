import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { describe, expect, it } from "vitest";
import { onError } from "../../../src/middleware/errors.ts";
import type { HonoEnv } from "../../../src/types.ts";

/** Hono's and its libraries' own refusals, thrown as HTTPException, become the problem their status names. */
function appThrowing(error: HTTPException) {
  const app = new Hono<HonoEnv>();
  app.use("*", async (c, next) => {
    c.set("requestId", "req_test_0001");
    await next();
  });
  app.post("/", () => {
    throw error;
  });
  app.onError(onError);
  return app;
}

describe("onError and HTTPException", () => {
  it("renders a library's 415 (zod-openapi's media-type check) as 415 UNSUPPORTED_MEDIA_TYPE, not 400 BAD_REQUEST", async () => {
    const response = await appThrowing(new HTTPException(415, { message: "Unsupported Media Type" })).request("/", {
      method: "POST",
    });
    expect(response.status).toBe(415);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    expect(await response.json()).toMatchObject({
      status: 415,
      code: "UNSUPPORTED_MEDIA_TYPE",
      type: "/problems/unsupported-media-type",
      request_id: "req_test_0001",
    });
  });
});
