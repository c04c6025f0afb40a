import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import type { TraceIds } from "../../../src/lib/trace-context.ts";
import { requestContext } from "../../../src/middleware/request-context.ts";
import type { HonoEnv } from "../../../src/types.ts";

/** The trace a request's logs, audit entries and events are correlated by, given the caller's traceparent. */
async function traceFor(traceparent: string): Promise<TraceIds> {
  let seen: TraceIds | undefined;
  const app = new Hono<HonoEnv>();
  app.use("*", requestContext);
  app.get("/", (c) => {
    seen = c.get("trace");
    return c.text("ok");
  });
  await app.request("/", { headers: { traceparent } }, {});
  if (!seen) throw new Error("the handler did not run");
  return seen;
}

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";

describe("a caller's W3C traceparent", () => {
  it("is continued when it is of a later version with fields this version lacks, as Trace Context requires", async () => {
    for (const header of [
      `cc-${TRACE_ID}-${PARENT_ID}-01`,
      `cc-${TRACE_ID}-${PARENT_ID}-01-what-the-future-will-be-like`,
    ]) {
      const ids = await traceFor(header);
      expect(ids.traceId, header).toBe(TRACE_ID);
      expect(ids.parentSpanId, header).toBe(PARENT_ID);
      expect(ids.sampled, header).toBe(true);
    }
  });

  it("is not continued when version 00 carries more than its four fields, or a later version runs on without a dash", async () => {
    for (const header of [`00-${TRACE_ID}-${PARENT_ID}-01-extra`, `cc-${TRACE_ID}-${PARENT_ID}-01.extra`]) {
      const ids = await traceFor(header);
      expect(ids.traceId, header).not.toBe(TRACE_ID);
      expect(ids.parentSpanId, header).toBeUndefined();
    }
  });
});
