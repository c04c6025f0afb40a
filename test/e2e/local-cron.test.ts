import { afterEach, describe, expect, it, vi } from "vitest";
import { cronMatcher, cronTriggers, startLocalCron } from "../../scripts/lib/local-cron.ts";

/**
 * npm run dev's cron scheduler (scripts/lib/local-cron.ts), on its own; server.test.ts fires
 * wrangler.toml's triggers through it against a real wrangler dev.
 */

describe("cronMatcher", () => {
  it("reads the cron forms it supports and refuses the rest", () => {
    const minutes = (expression: string) =>
      Array.from({ length: 60 }, (_, minute) => minute).filter((minute) =>
        cronMatcher(expression)(new Date(Date.UTC(2026, 10, 27, 5, minute))),
      );
    expect(minutes("*/15 * * * *")).toEqual([0, 15, 30, 45]);
    expect(minutes("1-10/3 * * * *")).toEqual([1, 4, 7, 10]);
    expect(minutes("50/4 * * * *")).toEqual([50, 54, 58]);
    expect(minutes("5,7,59 5 27 11 *")).toEqual([5, 7, 59]);
    expect(minutes("5,7,59 5 26 11 *")).toEqual([]);
    for (const unreadable of [
      "60 * * * *",
      "* * * *",
      "*/0 * * * *",
      "a * * * *",
      "5-1 * * * *",
      "0 0 * * 1",
      "0 0 * JAN *",
    ]) {
      expect(() => cronMatcher(unreadable), unreadable).toThrow(/cron/);
    }
  });

  it("reads only the top-level [triggers] of wrangler.toml", () => {
    const toml = [
      "[triggers]",
      "# every minute",
      'crons = ["* * * * *", "17 3 * * *"]',
      "",
      "[env.staging.triggers]",
      'crons = ["*/5 * * * *"]',
    ].join("\n");
    expect(cronTriggers(toml)).toEqual(["* * * * *", "17 3 * * *"]);
    expect(cronTriggers("[vars]\nA = 1\n")).toEqual([]);
    expect(() => cronTriggers('[triggers]\ncrons = ["0 0 * * MON"]\n')).toThrow(/day of week/);
  });
});

describe("startLocalCron", () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it("fires each trigger once at the start of each minute it names, with that minute as the scheduled time", async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 27, 3, 15, 30) });
    const asked: URL[] = [];
    vi.stubGlobal("fetch", async (url: string) => {
      asked.push(new URL(url));
      return new Response("ok");
    });
    const stop = startLocalCron({
      baseUrl: "http://127.0.0.1:1",
      triggers: ["* * * * *", "*/5 * * * *", "17 3 * * *"],
      log: (line) => expect.fail(line),
    });
    await vi.advanceTimersByTimeAsync(29_000); // 03:15:59: the minute it started in is not fired
    expect(asked).toEqual([]);
    await vi.advanceTimersByTimeAsync(119_000); // to 03:17:58, through 03:16 and 03:17
    stop();
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(
      asked.map((url) => [url.pathname, url.searchParams.get("cron"), Number(url.searchParams.get("time"))]),
    ).toEqual([
      ["/cdn-cgi/local/scheduled", "* * * * *", Date.UTC(2026, 10, 27, 3, 16)],
      ["/cdn-cgi/local/scheduled", "* * * * *", Date.UTC(2026, 10, 27, 3, 17)],
      ["/cdn-cgi/local/scheduled", "17 3 * * *", Date.UTC(2026, 10, 27, 3, 17)],
    ]);
  });

  it("says when wrangler dev refuses or does not answer, and keeps going", async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 27, 3, 15, 59) });
    let calls = 0;
    vi.stubGlobal("fetch", async () => {
      calls++;
      if (calls === 1) return new Response("exception", { status: 500 });
      throw new TypeError("fetch failed");
    });
    const log: string[] = [];
    const stop = startLocalCron({
      baseUrl: "http://127.0.0.1:1",
      triggers: ["* * * * *"],
      log: (line) => log.push(line),
    });
    await vi.advanceTimersByTimeAsync(2 * 60_000);
    stop();
    expect(log).toEqual([
      'cron "* * * * *": the scheduled handler answered 500 exception',
      'cron "* * * * *": wrangler dev did not answer (fetch failed)',
    ]);
  });
});
