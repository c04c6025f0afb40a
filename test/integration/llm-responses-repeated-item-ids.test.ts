import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { BASE, fakeUpstreams, OPENAI_URL, openAiCompletion, workspaceWith } from "../support/llm.ts";
import type { TestWorkspace } from "../support/workspaces.ts";

/**
 * Stored responses whose input repeats items an earlier response stored, with their ids (a client sending the whole
 * conversation again, earlier answers' output items included; or continuing with previous_response_id and repeating
 * items): each response's input_items list what that response was sent, whichever response registered the id first.
 */

afterEach(() => vi.restoreAllMocks());

const openAiChain = { strategy: "fallback" as const, chain: [{ provider: "openai", model: "gpt-4o-mini" }] };

async function appFetch(path: string, init: RequestInit): Promise<Response> {
  const providers = { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: OPENAI_URL };
  return createApp().fetch(new Request(`${BASE}${path}`, init), { ...env, ...providers }, createExecutionContext());
}

async function create(workspace: TestWorkspace, body: unknown): Promise<Record<string, any>> {
  const response = await appFetch("/api/v1/llm/responses", {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(response.status, await response.clone().text()).toBe(200);
  return (await response.json()) as Record<string, any>;
}

async function get(workspace: TestWorkspace, path: string, method = "GET"): Promise<Record<string, any>> {
  const response = await appFetch(`/api/v1/llm/responses/${path}`, { method, headers: workspace.headers });
  expect(response.status, await response.clone().text()).toBe(200);
  return (await response.json()) as Record<string, any>;
}

describe("stored responses whose input repeats an earlier response's items, ids and all", () => {
  it("lists each response's input items as it was sent them, pages after a repeated id, and deletes either", async () => {
    const workspace = await workspaceWith(openAiChain);
    let answer = 0;
    const fake = fakeUpstreams({ "openai.test": () => openAiCompletion(`answer ${++answer}`) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const question = { type: "message", id: "msg_client_q1", role: "user", content: "First?" };
    const first = await create(workspace, { input: [question] });
    // The whole conversation sent again, the first answer's output item with its id, then a new question.
    const resent = [
      question,
      first.output[0],
      { type: "message", id: "msg_client_q2", role: "user", content: "Second?" },
    ];
    const second = await create(workspace, { input: resent });
    // Continued with previous_response_id, repeating the first question (its id too).
    const third = await create(workspace, {
      previous_response_id: first.id,
      input: [{ ...question, content: "First, again?" }],
    });

    const ids = (page: Record<string, any>) => page.data.map((item: { id: string }) => item.id);
    expect(ids(await get(workspace, `${first.id}/input_items?order=asc`))).toEqual(["msg_client_q1"]);
    const secondItems = await get(workspace, `${second.id}/input_items?order=asc`);
    expect(ids(secondItems)).toEqual(["msg_client_q1", first.output[0].id, "msg_client_q2"]);
    expect(secondItems.data[1]).toMatchObject({ type: "message", role: "assistant" });
    expect(secondItems.data[1].content[0].text).toBe("answer 1");
    const after = await get(workspace, `${second.id}/input_items?order=asc&after=msg_client_q1&limit=1`);
    expect(ids(after)).toEqual([first.output[0].id]);
    expect(after.has_more).toBe(true);
    const thirdItems = await get(workspace, `${third.id}/input_items`);
    expect(thirdItems.data).toEqual([{ ...question, content: "First, again?" }]);

    // The first response deleted, the later ones still list the items they were sent.
    await get(workspace, first.id, "DELETE");
    expect(ids(await get(workspace, `${second.id}/input_items?order=asc`))).toEqual(ids(secondItems));
    await get(workspace, second.id, "DELETE");
    expect((await get(workspace, `${third.id}/input_items`)).data).toEqual(thirdItems.data);
    await get(workspace, third.id, "DELETE");
    const left = await env.DB.prepare("SELECT COUNT(*) AS n FROM llm_response_items WHERE workspace_id = ?")
      .bind(workspace.id)
      .first<{ n: number }>();
    expect(left?.n).toBe(0);
  });

  it("resolves an item_reference to the newest response that carries the id, also once the first is deleted", async () => {
    const workspace = await workspaceWith(openAiChain);
    const sent: unknown[] = [];
    const fake = fakeUpstreams({
      "openai.test": async (request) => {
        sent.push(((await request.json()) as { messages: unknown[] }).messages);
        return openAiCompletion("ok");
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const first = await create(workspace, { input: [{ type: "message", id: "msg_c1", role: "user", content: "v1" }] });
    await create(workspace, { input: [{ type: "message", id: "msg_c1", role: "user", content: "v2" }] });
    await create(workspace, { input: [{ type: "item_reference", id: "msg_c1" }] });
    expect(sent.at(-1)).toEqual([{ role: "user", content: "v2" }]);

    await get(workspace, first.id, "DELETE");
    await create(workspace, { input: [{ type: "item_reference", id: "msg_c1" }] });
    expect(sent.at(-1)).toEqual([{ role: "user", content: "v2" }]);
  });
});
