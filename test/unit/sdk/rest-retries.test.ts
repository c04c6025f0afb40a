import { describe, expect, it } from "vitest";
import { MgxApiError, MgxClient } from "../../../sdk/index.ts";
import { scripted } from "./scripted-fetch.ts";

/** When MgxClient asks again, and when it must not: against a scripted fetch that records what it was sent. */

function problem(status: number, headers: Record<string, string> = {}): Response {
  return Response.json(
    { type: "/problems/x", title: "x", status, detail: `answered ${status}`, code: "X", request_id: "req_1" },
    { status, headers: { "Content-Type": "application/problem+json", ...headers } },
  );
}

const task = { id: "task_1", title: "t", type: "testing", status: "queued" };

describe("MgxClient retries", () => {
  it("asks a GET again after a 503 and a 429 with Retry-After, and answers the success", async () => {
    const { client, sent } = scripted(problem(503), problem(429, { "Retry-After": "0" }), Response.json(task));
    await expect(client.tasks.get("task_1")).resolves.toMatchObject({ id: "task_1" });
    expect(sent.map((request) => request.method)).toEqual(["GET", "GET", "GET"]);
  });

  it("asks a GET again after a connection that failed", async () => {
    const { client, sent } = scripted(new TypeError("fetch failed"), Response.json(task));
    await expect(client.tasks.get("task_1")).resolves.toMatchObject({ id: "task_1" });
    expect(sent).toHaveLength(2);

    // workerd's own words for a connection that broke.
    const lost = scripted(new Error("Network connection lost."), Response.json(task));
    await expect(lost.client.tasks.get("task_1")).resolves.toMatchObject({ id: "task_1" });
    expect(lost.sent).toHaveLength(2);
  });

  it("does not ask again when a custom fetch throws what no connection does (a bug in it, the same every time)", async () => {
    const { client, sent } = scripted(new ReferenceError("signer is not defined"), Response.json(task));
    await expect(client.tasks.get("task_1")).rejects.toThrow(ReferenceError);
    expect(sent).toHaveLength(1);
  });

  it("sends a task again only under its Idempotency-Key, with the same key and body", async () => {
    const keyed = scripted(problem(503), Response.json(task, { status: 202 }));
    await keyed.client.tasks.create({ title: "t", type: "testing" }, { idempotencyKey: "k-1" });
    expect(keyed.sent).toHaveLength(2);
    expect(keyed.sent.map((request) => request.headers["Idempotency-Key"])).toEqual(["k-1", "k-1"]);
    expect(keyed.sent[1].body).toBe(keyed.sent[0].body);

    // A key the caller sets itself, in any case, counts as well.
    const ownKey = scripted(problem(503), Response.json(task, { status: 202 }));
    await ownKey.client.request("POST", "/api/v1/tasks", { body: {}, headers: { "idempotency-key": "k-2" } });
    expect(ownKey.sent).toHaveLength(2);

    // Without a key a second POST could make a second task: the 503 is the caller's to handle.
    const unkeyed = scripted(problem(503), Response.json(task, { status: 202 }));
    await expect(unkeyed.client.tasks.create({ title: "t", type: "testing" })).rejects.toMatchObject({ status: 503 });
    expect(unkeyed.sent).toHaveLength(1);
    const broken = scripted(new TypeError("fetch failed"));
    await expect(broken.client.tasks.create({ title: "t", type: "testing" })).rejects.toThrow("fetch failed");
    expect(broken.sent).toHaveLength(1);
  });

  it("does not wait out a Retry-After longer than maxRetryWaitMs (a spent budget): it throws at once", async () => {
    const { client, sent } = scripted(problem(429, { "Retry-After": "37809" }));
    const error = await client.tasks.list().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(MgxApiError);
    expect(error).toMatchObject({ status: 429, retryAfterSeconds: 37809 });
    expect(sent).toHaveLength(1);
  });

  it("does not ask again when the answer says X-Should-Retry: false, nor after a 4xx other than 429", async () => {
    const told = scripted(problem(503, { "X-Should-Retry": "false" }));
    await expect(told.client.budgets.get()).rejects.toMatchObject({ status: 503 });
    expect(told.sent).toHaveLength(1);
    const refused = scripted(problem(404));
    await expect(refused.client.tasks.get("task_2")).rejects.toMatchObject({ status: 404 });
    expect(refused.sent).toHaveLength(1);
  });

  it("gives up after maxRetries, throwing the last answer", async () => {
    const { client, sent } = scripted(problem(502), problem(503), problem(504));
    await expect(client.providers().next()).rejects.toMatchObject({ status: 504 });
    expect(sent).toHaveLength(3);

    const never = scripted(problem(503));
    const once = new MgxClient({ baseUrl: "http://api.test", fetch: never.fetch, maxRetries: 0 });
    await expect(once.tasks.get("task_1")).rejects.toMatchObject({ status: 503 });
    expect(never.sent).toHaveLength(1);
  });

  it("takes a request's own maxRetries, and asks ready() once: its 503 is the answer", async () => {
    const own = scripted(problem(503), Response.json(task));
    await expect(own.client.request("GET", "/api/v1/tasks/task_1", { maxRetries: 0 })).rejects.toMatchObject({
      status: 503,
    });
    expect(own.sent).toHaveLength(1);
    const probe = scripted(problem(503), Response.json({ status: "ready", checks: {} }));
    await expect(probe.client.ready()).rejects.toMatchObject({ status: 503 });
    expect(probe.sent).toHaveLength(1);
    // Options that leave maxRetries undefined (`{ signal, maxRetries: flags.retries }`) leave it at none as well.
    const passed = scripted(problem(503), Response.json({ status: "ready", checks: {} }));
    await expect(passed.client.ready({ maxRetries: undefined })).rejects.toMatchObject({ status: 503 });
    expect(passed.sent).toHaveLength(1);
  });

  it("reads a Retry-After given as an HTTP date", async () => {
    // A whole second at least a second ahead: an HTTP date has no milliseconds.
    const soon = new Date(Math.ceil(Date.now() / 1_000) * 1_000 + 1_000).toUTCString();
    const { client, sent } = scripted(problem(503, { "Retry-After": soon }), Response.json(task));
    const startedMs = Date.now();
    await client.tasks.get("task_1");
    expect(sent).toHaveLength(2);
    // Waited until about that date (whole seconds), not the 1–2 ms backoff.
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(900);
  });

  it("stops a retry's wait when the request's signal aborts", async () => {
    const { client, sent } = scripted(problem(503, { "Retry-After": "30" }), Response.json(task));
    const controller = new AbortController();
    const asked = client.request("GET", "/api/v1/tasks/task_1", { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort(new DOMException("the caller left", "AbortError"));
    await expect(asked).rejects.toMatchObject({ name: "AbortError" });
    expect(sent).toHaveLength(1);
  });
});

describe("MgxClient tasks.wait", () => {
  it("reads the task until it ends, and answers it as it ended", async () => {
    const { client, sent } = scripted(
      Response.json({ ...task, status: "queued" }),
      Response.json({ ...task, status: "running" }),
      Response.json({ ...task, status: "completed" }),
    );
    await expect(client.tasks.wait("task_1", { intervalMs: 1 })).resolves.toMatchObject({ status: "completed" });
    expect(sent).toHaveLength(3);
  });

  it("throws a TimeoutError when the task has not ended by timeoutMs", async () => {
    const { client, sent } = scripted(
      ...Array.from({ length: 50 }, () => Response.json({ ...task, status: "running" })),
    );
    await expect(client.tasks.wait("task_1", { intervalMs: 10, timeoutMs: 50 })).rejects.toMatchObject({
      name: "TimeoutError",
    });
    expect(sent.length).toBeGreaterThanOrEqual(2);
    expect(sent.length).toBeLessThan(50);
  });
});

describe("MgxClient tasks.wait, bounded", () => {
  it("reads again at once with intervalMs 0, rather than throwing a TimeoutError after the first read", async () => {
    const { client, sent } = scripted(
      Response.json({ ...task, status: "queued" }),
      Response.json({ ...task, status: "completed" }),
    );
    await expect(client.tasks.wait("task_1", { intervalMs: 0, timeoutMs: 5_000 })).resolves.toMatchObject({
      status: "completed",
    });
    expect(sent).toHaveLength(2);
  });

  it("throws its TimeoutError at timeoutMs even while a read waits out a Retry-After", async () => {
    const { client, sent } = scripted(
      problem(503, { "Retry-After": "10" }),
      Response.json({ ...task, status: "running" }),
    );
    const startedMs = Date.now();
    await expect(client.tasks.wait("task_1", { intervalMs: 10, timeoutMs: 100 })).rejects.toMatchObject({
      name: "TimeoutError",
      message: "task task_1 had not ended after 100 ms",
    });
    expect(Date.now() - startedMs).toBeLessThan(2_000);
    expect(sent).toHaveLength(1);
  });

  it("still stops at once when the caller's signal aborts, with the caller's reason", async () => {
    const { client } = scripted(...Array.from({ length: 10 }, () => Response.json({ ...task, status: "running" })));
    const controller = new AbortController();
    const waited = client.tasks.wait("task_1", { intervalMs: 1_000, signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort(new DOMException("the caller left", "AbortError"));
    await expect(waited).rejects.toMatchObject({ name: "AbortError", message: "the caller left" });
  });
});

describe("MgxClient typed methods' own options", () => {
  it("stop a typed method's retry wait with its signal", async () => {
    const { client, sent } = scripted(problem(503, { "Retry-After": "30" }), Response.json({ data: [] }));
    const controller = new AbortController();
    const asked = client.tasks.list({ status: "queued" }, { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort(new DOMException("the caller left", "AbortError"));
    await expect(asked).rejects.toMatchObject({ name: "AbortError" });
    expect(sent).toHaveLength(1);
    expect(sent[0].url).toBe("http://api.test/api/v1/tasks?status=queued");
  });

  it("send a typed method's own headers over its defaults, and take its own maxRetries", async () => {
    const { client, sent } = scripted(
      new Response("part", { status: 206, headers: { "Content-Range": "bytes 0-3/10" } }),
      problem(503),
      Response.json(task, { status: 202 }),
    );
    const part = await client.artifacts.content("art_1", { headers: { Range: "bytes=0-3" } });
    expect(part.status).toBe(206);
    expect(sent[0].headers).toMatchObject({ Range: "bytes=0-3", Accept: "*/*", Authorization: "Bearer mgx_test" });

    // A keyed create with headers of its own: both sent, and its own maxRetries of 0 gives the 503 back at once.
    await expect(
      client.tasks.create(
        { title: "t", type: "testing" },
        { idempotencyKey: "k-3", headers: { "X-Client": "cli" }, maxRetries: 0 },
      ),
    ).rejects.toMatchObject({ status: 503 });
    expect(sent).toHaveLength(2);
    expect(sent[1].headers).toMatchObject({ "Idempotency-Key": "k-3", "X-Client": "cli" });
  });

  it("replace a header of the client's or the method's whatever its letter case, rather than send both", async () => {
    const { client, sent } = scripted(
      Response.json(task),
      new Response("x", { headers: { "Content-Type": "text/x" } }),
    );
    await client.tasks.get("task_1", { headers: { authorization: "Bearer mgx_other" } });
    await client.artifacts.content("art_1", { headers: { accept: "text/plain" } });
    const named = (headers: Record<string, string>, name: string) =>
      Object.entries(headers).filter(([key]) => key.toLowerCase() === name);
    expect(named(sent[0].headers, "authorization")).toEqual([["authorization", "Bearer mgx_other"]]);
    expect(named(sent[1].headers, "accept")).toEqual([["accept", "text/plain"]]);
    expect(named(sent[1].headers, "authorization")).toEqual([["Authorization", "Bearer mgx_test"]]);
  });

  it("pass a list's options to every page it reads", async () => {
    const { client, sent } = scripted(
      Response.json({ data: [{ provider: "openai" }], next_cursor: "c2" }),
      Response.json({ data: [{ provider: "anthropic" }], next_cursor: null }),
    );
    const names: string[] = [];
    for await (const provider of client.providers({ headers: { "X-Client": "cli" } })) names.push(provider.provider);
    expect(names).toEqual(["openai", "anthropic"]);
    expect(sent.map((request) => [request.url, request.headers["X-Client"]])).toEqual([
      ["http://api.test/api/v1/providers?limit=100", "cli"],
      ["http://api.test/api/v1/providers?limit=100&cursor=c2", "cli"],
    ]);
  });
});
