import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { reportError } from "../../src/observability/sentry.ts";
import { recordSentryReports, TEST_SENTRY_DSN } from "../support/sentry.ts";

/** What an error report sends Sentry: never a credential, wherever in the report it would have been. */

const OPENAI_KEY = "sk-proj-Abc123Def456Ghi789Jkl0";
const ANTHROPIC_KEY = "sk-ant-api03-Zyx987Wvu654Tsr321";
const BEARER = "Bearer mgx_live_0123456789abcdefghij";

afterEach(() => vi.restoreAllMocks());

async function reported(error: unknown, context: Parameters<typeof reportError>[3]): Promise<string> {
  const reports = recordSentryReports();
  const ctx = createExecutionContext();
  reportError({ ...env, SENTRY_DSN: TEST_SENTRY_DSN }, ctx, error, context);
  await waitOnExecutionContext(ctx);
  expect(reports).toHaveLength(1);
  return reports[0];
}

describe("an error report", () => {
  it("redacts credentials in the exception's text, the extras and secret-named query parameters", async () => {
    const error = new Error(`provider answered 401: Incorrect API key provided: ${OPENAI_KEY} (sent as ${BEARER})`);
    const report = await reported(error, {
      request: new Request(
        `https://api.test/api/v1/tasks?api_key=${OPENAI_KEY}&access_token=tok_secret_1&status=queued`,
      ),
      extra: { upstream: `x-api-key ${ANTHROPIC_KEY}`, authorization: BEARER, attempt: 2 },
    });
    for (const secret of [OPENAI_KEY, ANTHROPIC_KEY, "mgx_live_0123456789abcdefghij", "tok_secret_1"])
      expect(report).not.toContain(secret);
    // What is no secret still reaches Sentry: the error's words, the extras' other fields, the other parameters.
    expect(report).toContain("Incorrect API key provided: [REDACTED]");
    expect(report).toContain("status=queued");
    expect(report).toContain('"attempt":2');
  });
});
