import { vi } from "vitest";

/** A DSN whose host the spy below answers: error reports sent to it are kept, not sent anywhere. */
export const TEST_SENTRY_DSN = "https://publickey@sentry.test/42";

/**
 * Spies on `fetch`: requests to the test DSN's host are answered as Sentry does and their bodies kept (in the array
 * returned); every other request goes through. Undone by `vi.restoreAllMocks()`.
 */
export function recordSentryReports(): string[] {
  const reports: string[] = [];
  const realFetch = globalThis.fetch;
  vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const request = new Request(input, init);
    if (new URL(request.url).hostname !== "sentry.test") return realFetch(input, init);
    reports.push(await request.text());
    return new Response('{"id":"0"}', { status: 200 });
  });
  return reports;
}
