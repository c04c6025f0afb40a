import { afterEach, describe, expect, it, vi } from "vitest";
import { anthropicMessage, fakeUpstreams, openAiCompletion, sdkAgainstApp, workspaceWith } from "../support/llm.ts";

/**
 * Models named by their dated snapshot, as providers' own docs name them (Anthropic's model pages give
 * `claude-sonnet-4-20250514`, OpenAI's structured-outputs guide `gpt-4o-2024-08-06`), and as SDK users pin them:
 * each is the model its alias is, at the alias's price and ceiling, not an unknown model charged a guess.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";
const ANTHROPIC = "anthropic.test";
const messages = [{ role: "user" as const, content: "Refactor the parser." }];

interface Figures {
  x_mgx: { provider: string; cost_usd: number };
}

describe("a model named by its dated snapshot", () => {
  it("is charged its model's price: OpenAI's gpt-4o-mini-2024-07-18 as gpt-4o-mini", async () => {
    const workspace = await workspaceWith(null);
    const fake = fakeUpstreams({
      [OPENAI]: () => openAiCompletion("done", { prompt_tokens: 10_000, completion_tokens: 1_000 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const completion = (await sdkAgainstApp(workspace.key).chat.completions.create({
      model: "openai:gpt-4o-mini-2024-07-18",
      messages,
    })) as unknown as Figures;
    expect(completion.x_mgx.provider).toBe("openai");
    // 10,000 in at $0.15 and 1,000 out at $0.60 per million, not the unknown-model guess of $5 and $15 ($0.065).
    expect(completion.x_mgx.cost_usd).toBe(0.0021);
  });

  it("is charged its model's price: Anthropic's claude-opus-4-20250514 as claude-opus-4-0, not a third of it", async () => {
    const workspace = await workspaceWith(null);
    const fake = fakeUpstreams({
      [ANTHROPIC]: () => anthropicMessage("done", { input_tokens: 10_000, output_tokens: 1_000 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const completion = (await sdkAgainstApp(workspace.key).chat.completions.create({
      model: "anthropic:claude-opus-4-20250514",
      messages,
    })) as unknown as Figures;
    expect(completion.x_mgx.provider).toBe("anthropic");
    // $15 in and $75 out per million: the unknown-model guess ($0.065) let a cost budget run over by three times.
    expect(completion.x_mgx.cost_usd).toBe(0.225);
  });

  it("asks no longer answer than its model gives: claude-3-5-haiku-20241022's max_tokens is held to 8,192", async () => {
    const workspace = await workspaceWith(null);
    const sent: Record<string, unknown>[] = [];
    const fake = fakeUpstreams({
      [ANTHROPIC]: async (request) => {
        const body = (await request.json()) as Record<string, unknown>;
        sent.push(body);
        // Anthropic's own refusal names the snapshot.
        if ((body.max_tokens as number) > 8_192) {
          return Response.json(
            {
              type: "error",
              error: {
                type: "invalid_request_error",
                message: `max_tokens: ${body.max_tokens} > 8192, which is the maximum allowed number of output tokens for claude-3-5-haiku-20241022`,
              },
            },
            { status: 400 },
          );
        }
        return anthropicMessage("done", { input_tokens: 10, output_tokens: 2 });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const completion = await sdkAgainstApp(workspace.key).chat.completions.create({
      model: "anthropic:claude-3-5-haiku-20241022",
      messages,
      max_tokens: 10_000,
    });
    expect(completion.choices[0].message.content).toBe("done");
    expect(sent.map((body) => body.max_tokens)).toEqual([8_192]);
  });

  it("is listed at its model's price by GET /api/v1/llm/models/{id}", async () => {
    const workspace = await workspaceWith(null);
    const model = (await sdkAgainstApp(workspace.key).models.retrieve(
      "anthropic:claude-sonnet-4-20250514",
    )) as unknown as {
      x_mgx: Record<string, unknown>;
    };
    expect(model.x_mgx).toMatchObject({
      input_per_million_usd: 3,
      output_per_million_usd: 15,
      max_output_tokens: 64_000,
      price_source: "table",
    });
  });

  it("keeps the unknown-model rate for a snapshot priced apart from its alias (gpt-4o-2024-05-13: $5 and $15)", async () => {
    const workspace = await workspaceWith(null);
    const fake = fakeUpstreams({
      [OPENAI]: () => openAiCompletion("done", { prompt_tokens: 10_000, completion_tokens: 1_000 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const completion = (await sdkAgainstApp(workspace.key).chat.completions.create({
      model: "openai:gpt-4o-2024-05-13",
      messages,
    })) as unknown as Figures;
    expect(completion.x_mgx.cost_usd).toBe(0.065);
  });

  it("named bare, is served by the provider that has its model, not by whatever the chain holds", async () => {
    // The chain is the default, simulated; OpenAI and Anthropic are configured.
    const workspace = await workspaceWith(null);
    const sentModels: string[] = [];
    const fake = fakeUpstreams({
      [OPENAI]: async (request) => {
        sentModels.push(((await request.json()) as { model: string }).model);
        return openAiCompletion("done");
      },
      [ANTHROPIC]: async (request) => {
        sentModels.push(((await request.json()) as { model: string }).model);
        return anthropicMessage("done");
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const sdk = sdkAgainstApp(workspace.key);
    for (const [model, provider] of [
      ["claude-sonnet-4-20250514", "anthropic"],
      ["gpt-4o-2024-08-06", "openai"],
    ]) {
      const completion = (await sdk.chat.completions.create({ model, messages })) as unknown as Figures & {
        model: string;
      };
      expect(completion.x_mgx.provider).toBe(provider);
      expect(completion.model).toBe(model);
      const listed = await sdk.models.retrieve(model);
      expect(listed.id).toBe(`${provider}:${model}`);
    }
    expect(sentModels).toEqual(["claude-sonnet-4-20250514", "gpt-4o-2024-08-06"]);
  });
});
