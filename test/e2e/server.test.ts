import { readFile } from "node:fs/promises";
import { request } from "node:http";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cronMatcher, cronTriggers, fireDueTriggers, LOCAL_SCHEDULED_PATH } from "../../scripts/lib/local-cron.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

let worker: WorkerProcess;

beforeAll(async () => {
  worker = await startWorker({ vars: { ENABLE_DEBUG_ROUTES: "true" }, testScheduled: true });
});
afterAll(async () => {
  await worker?.stop();
});

async function expectProblem(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  const body = (await response.json()) as Record<string, unknown>;
  expect(body).toMatchObject({ status, code });
  expect(body.request_id).toBe(response.headers.get("x-request-id"));
}

describe("wrangler dev serves the API", () => {
  it("GET /health and /ready", async () => {
    const health = await fetch(`${worker.baseUrl}/health`);
    expect(health.status).toBe(200);
    expect(health.headers.get("x-api-version")).toBe("1.0");
    const ready = await fetch(`${worker.baseUrl}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: "ready" });
  });

  it("GET /openapi.json is OpenAPI 3.1 with this server's URL", async () => {
    const response = await fetch(`${worker.baseUrl}/openapi.json`);
    const doc = (await response.json()) as { openapi: string; servers: { url: string }[] };
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.servers[0].url).toBe(worker.baseUrl);
  });

  it("bad input over real HTTP is a 4xx problem", async () => {
    const post = (body: BodyInit, contentType: string) =>
      fetch(`${worker.baseUrl}/__debug/echo`, { method: "POST", headers: { "Content-Type": contentType }, body });
    await expectProblem(await post("{not json", "application/json"), 400, "MALFORMED_JSON");
    await expectProblem(await post("<a/>", "application/xml"), 415, "UNSUPPORTED_MEDIA_TYPE");
    await expectProblem(
      await post(JSON.stringify({ message: "x".repeat(1_100_000) }), "application/json"),
      413,
      "PAYLOAD_TOO_LARGE",
    );
    await expectProblem(await post(JSON.stringify({ count: "many" }), "application/json"), 422, "VALIDATION_FAILED");
    await expectProblem(await fetch(`${worker.baseUrl}/no/such/route`), 404, "NOT_FOUND");
    const wrongMethod = await fetch(`${worker.baseUrl}/ready`, { method: "POST" });
    await expectProblem(wrongMethod, 405, "METHOD_NOT_ALLOWED");
    expect(wrongMethod.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
  });

  it("a GET's body is not read, so not refused for its size: /openapi.json lists no 413 on a GET", async () => {
    // fetch will not send a GET with a body; a client on plain HTTP may.
    const body = "x".repeat(1_100_000);
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const url = new URL("/health", worker.baseUrl);
      const sent = request(
        { host: url.hostname, port: url.port, path: url.pathname, method: "GET", agent: false },
        (response) => {
          response.resume();
          resolve(response.statusCode);
        },
      );
      sent.on("error", reject);
      sent.setHeader("Content-Type", "text/plain");
      sent.setHeader("Content-Length", String(body.length));
      sent.end(body);
    });
    expect(status).toBe(200);
  });
});

describe("cron triggers", () => {
  const wranglerToml = () => readFile(resolve(import.meta.dirname, "../../wrangler.toml"), "utf8");
  const runsStarted = (cron: string) =>
    worker.jsonLogs().filter((line) => line.msg === "scheduled run started" && line.cron === cron);

  // A trigger in wrangler.toml with no jobs in src/scheduled.ts (or a job under an expression no trigger
  // fires) would do nothing, silently.
  it("each trigger in wrangler.toml runs its jobs, the same triggers in every environment", async () => {
    const toml = await wranglerToml();
    const triggers = cronTriggers(toml);
    expect(triggers.length).toBeGreaterThan(0);
    const everyList = [...toml.matchAll(/^crons\s*=\s*(\[.*\])\s*$/gm)].map((match) => JSON.parse(match[1]));
    expect(everyList).toEqual([triggers, triggers, triggers]); // top level, staging, production
    for (const cron of triggers) {
      const response = await fetch(`${worker.baseUrl}${LOCAL_SCHEDULED_PATH}?cron=${encodeURIComponent(cron)}`);
      expect(await response.text()).toBe("ok");
      const started = await worker.waitForLog((line) => line.msg === "scheduled run started" && line.cron === cron);
      expect(started.jobs).toBeGreaterThan(0);
    }
    expect(worker.jsonLogs().filter((line) => line.msg === "scheduled job failed")).toEqual([]);
  });

  it("npm run dev's scheduler fires the triggers a minute names, in UTC", async () => {
    const triggers = cronTriggers(await wranglerToml());
    const at = (iso: string) => new Date(iso);
    const due = (iso: string) => triggers.filter((cron) => cronMatcher(cron)(at(iso)));
    expect(due("2026-11-27T03:17:00Z")).toEqual(["* * * * *", "17 3 * * *"]);
    expect(due("2026-11-27T04:17:00Z")).toEqual(["* * * * *"]);
    expect(due("2026-11-27T03:20:00Z")).toEqual(["* * * * *", "*/5 * * * *"]);

    const before = triggers.map((cron) => runsStarted(cron).length);
    const log: string[] = [];
    const fired = await fireDueTriggers(
      { baseUrl: worker.baseUrl, triggers, log: (line) => log.push(line) },
      at("2026-11-27T03:17:00Z"),
    );
    expect(fired).toEqual(["* * * * *", "17 3 * * *"]);
    expect(log).toEqual([]);
    const expected = triggers.map((cron, index) => before[index] + (fired.includes(cron) ? 1 : 0));
    await expect.poll(() => triggers.map((cron) => runsStarted(cron).length), { timeout: 10_000 }).toEqual(expected);
  });
});

describe("logs", () => {
  it("are one JSON object per line, and a request's lines share its request_id and trace_id", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const requestId = "e2e-log-check-0001";
    const response = await fetch(`${worker.baseUrl}/__debug/error`, {
      headers: { "X-Request-Id": requestId, traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    expect(response.status).toBe(500);

    await worker.waitForLog((line) => line.request_id === requestId && line.msg === "request failed");
    const lines = worker.jsonLogs().filter((line) => line.request_id === requestId);
    expect(lines.map((line) => line.msg)).toEqual(["unhandled error", "request failed"]);
    for (const line of lines) {
      expect(line).toMatchObject({ trace_id: traceId, level: "error" });
      expect(line.span_id).toMatch(/^[0-9a-f]{16}$/);
      expect(typeof line.time).toBe("string");
    }

    // Every line the application printed (they all carry a level and msg) is whole JSON.
    const appLines = worker.output().filter((line) => line.includes('"msg":'));
    expect(appLines.length).toBeGreaterThan(0);
    for (const line of appLines) expect(() => JSON.parse(line.trim())).not.toThrow();
  });

  it("never print the Authorization header", async () => {
    await fetch(`${worker.baseUrl}/health`, { headers: { Authorization: "Bearer mgx_supersecretvalue123456" } });
    await worker.waitForLog((line) => line.path === "/health");
    expect(worker.output().join("\n")).not.toContain("supersecretvalue");
  });
});
