import { z } from "@hono/zod-openapi";
import type { StreamEvent } from "./provider.ts";
import {
  type ChatMessage,
  type ChatRequest,
  type ChatResult,
  REASONING_EFFORTS,
  type ResponseFormat,
  type TokenUsage,
  timedOutAttemptView,
} from "./types.ts";

/**
 * The OpenAI chat-completions wire format of POST /api/v1/llm/chat/completions:
 * request and response schemas (loose, so fields the official SDKs add pass
 * through), the mapping to the router's ChatRequest, and the SSE chunks of a
 * streamed answer. Our own figures ride along under `x_mgx`.
 */

const TextPart = z.object({ type: z.literal("text"), text: z.string() }).loose();
/** OpenAI takes an assistant's refusal as a content part too, as well as in its `refusal` field. */
const RefusalPart = z.object({ type: z.literal("refusal"), refusal: z.string() }).loose();

const MessageSchema = z
  .object({
    role: z.enum(["system", "developer", "user", "assistant", "tool"]),
    content: z
      .union([z.string(), z.array(z.union([TextPart, RefusalPart])), z.null()], {
        error:
          'must be a string, null, or a list of text parts ({"type": "text", "text": …}), an assistant\'s also of refusal parts: image, audio and file parts are not supported',
      })
      .optional(),
    name: z.string().max(256).optional(),
    /** An assistant's refusal, as OpenAI answered it: the SDK sends the message back as it came, content null. */
    refusal: z.string().nullable().optional(),
    tool_call_id: z.string().max(256).optional(),
    tool_calls: z
      .array(
        z.object({
          id: z.string().max(256),
          type: z.literal("function"),
          function: z.object({ name: z.string().max(256), arguments: z.string() }),
        }),
      )
      .optional(),
  })
  .loose();

const ToolSchema = z
  .object({
    type: z.literal("function"),
    function: z
      .object({
        name: z.string().min(1).max(64),
        description: z.string().max(4096).optional(),
        parameters: z.record(z.string(), z.unknown()).optional(),
        strict: z.boolean().nullable().optional(),
      })
      .loose(),
  })
  .loose();

/**
 * A field of OpenAI's request the router takes and does not use. Each changes no answer's content, so refusing it
 * would only break clients written for OpenAI that send it; nothing reads it, so it is not bounded beyond its type.
 */
function ignored<T extends z.ZodType>(schema: T, why: string) {
  return schema
    .nullable()
    .optional()
    .openapi({ description: `Accepted and ignored: ${why}` });
}

/**
 * OpenAI's request fields that ask for what no chain can promise (output other than text, OpenAI's own
 * tools, the deprecated function calling): dropped, the answer would silently lack what was asked for, so
 * a value other than null (or, for `modalities`, other than text alone) is refused with 422 naming the field.
 */
const REFUSED_FIELDS = {
  functions: "deprecated function calling is not offered: send `tools`",
  function_call: "deprecated function calling is not offered: send `tool_choice`",
  audio: "audio output is not offered: answers are text",
  modalities: 'only ["text"] is offered: answers are text',
  web_search_options: "web search is not offered: it is OpenAI's own tool, which other providers lack",
} as const;

function refused(field: keyof typeof REFUSED_FIELDS) {
  return z
    .unknown()
    .optional()
    .openapi({ description: `Refused with 422 unless null (or empty, or "none"): ${REFUSED_FIELDS[field]}.` });
}

/** Whether a refused field's value asks for anything: an empty list of functions, or `function_call: "none"`, does not. */
function asksForRefused(field: keyof typeof REFUSED_FIELDS, value: unknown): boolean {
  if (value === undefined || value === null) return false;
  if (field === "modalities") return !(Array.isArray(value) && value.every((modality) => modality === "text"));
  if (field === "functions") return !(Array.isArray(value) && value.length === 0);
  if (field === "function_call") return value !== "none";
  return true;
}

const maxTokens = z.number().int().min(1).max(1_000_000).nullable().optional();
const penalty = z.number().min(-2).max(2).nullable().optional();

const ToolChoiceSchema = z.union([
  z.enum(["auto", "none", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1).max(64) }) }).loose(),
]);

const ResponseFormatSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z
      .object({
        name: z.string().min(1).max(64),
        description: z.string().max(4096).optional(),
        schema: z.record(z.string(), z.unknown()).optional(),
        strict: z.boolean().nullable().optional(),
      })
      .loose(),
  }),
]);

export const ChatCompletionRequestSchema = z
  .object({
    model: z.string().max(256).optional().openapi({
      description:
        "`provider:model`, tried first; or a bare model name, resolved as GET /api/v1/llm/models/{model} resolves it (the chain's entries with that model, else the first configured provider serving it) and tried there first; or `auto`. The chain follows as fallbacks; `auto`, or a name no configured provider serves, lets the chain decide.",
    }),
    messages: z.array(MessageSchema).min(1).max(2_000),
    tools: z.array(ToolSchema).max(128).optional(),
    tool_choice: ToolChoiceSchema.nullable().optional(),
    max_tokens: maxTokens,
    max_completion_tokens: maxTokens,
    temperature: z.number().min(0).max(2).nullable().optional(),
    top_p: z.number().min(0).max(1).nullable().optional(),
    stop: z
      .union([z.string().min(1), z.array(z.string().min(1)).max(4)])
      .nullable()
      .optional(),
    seed: z.number().int().nullable().optional(),
    presence_penalty: penalty,
    frequency_penalty: penalty,
    response_format: ResponseFormatSchema.nullable().optional(),
    parallel_tool_calls: z
      .boolean()
      .nullable()
      .optional()
      .openapi({ description: "With tools: false asks for at most one tool call per answer." }),
    reasoning_effort: z
      .enum(REASONING_EFFORTS)
      .nullable()
      .optional()
      .openapi({ description: "For reasoning models (OpenAI's o-series and gpt-5); other models are not sent it." }),
    n: z
      .number()
      .int()
      .min(1)
      .max(1)
      .nullable()
      .optional()
      .openapi({ description: "Only 1 (the default): more choices are refused with 422, as each call answers one." }),
    logprobs: z.boolean().nullable().optional().openapi({
      description:
        "Only false: log probabilities are refused with 422, as no provider but OpenAI has them (the answer's `logprobs` is null).",
    }),
    top_logprobs: z
      .number()
      .int()
      .min(0)
      .max(20)
      .nullable()
      .optional()
      .openapi({ description: "Only 0: see `logprobs`." }),
    logit_bias: z.record(z.string(), z.number().min(-100).max(100)).nullable().optional().openapi({
      description:
        "Only empty: a bias is refused with 422, as token ids are one tokenizer's and no provider but OpenAI takes them.",
    }),
    stream: z.boolean().nullable().optional(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).loose().nullable().optional(),
    store: ignored(z.boolean(), "no completion is stored for OpenAI's evals or distillation, whoever serves the call."),
    metadata: ignored(z.record(z.string(), z.string()), "tags of a stored completion (see `store`)."),
    user: ignored(
      z.string().max(256),
      "not sent to providers (OpenAI now asks for `safety_identifier` and `prompt_cache_key` instead).",
    ),
    safety_identifier: ignored(z.string(), "not sent to providers; the caller is known by its key."),
    prompt_cache_key: ignored(
      z.string(),
      "not sent to providers, which cache prompt prefixes on their own (`usage.prompt_tokens_details.cached_tokens`).",
    ),
    service_tier: ignored(
      z.string(),
      "calls go at each provider's default tier, and the answer has no `service_tier`.",
    ),
    prediction: ignored(
      z.object({}).loose(),
      "a predicted output only speeds OpenAI's answer up; it changes no answer.",
    ),
    verbosity: ignored(z.string(), "answers come at each model's default length."),
    functions: refused("functions"),
    function_call: refused("function_call"),
    audio: refused("audio"),
    modalities: refused("modalities").openapi({
      description: `Only ["text"] (or null): ${REFUSED_FIELDS.modalities}; anything else is refused with 422.`,
    }),
    web_search_options: refused("web_search_options"),
  })
  .loose()
  .superRefine((body, issues) => {
    body.messages.forEach((message, index) => {
      if (message.role !== "assistant" && Array.isArray(message.content)) {
        if (message.content.some((part) => part.type === "refusal")) {
          issues.addIssue({
            code: "custom",
            path: ["messages", index, "content"],
            message: "only an assistant's content may hold refusal parts",
          });
        }
      }
    });
    // Refused, as n above 1 is, rather than answered with logprobs null: only OpenAI has them, so they would
    // come or not as the chain routed the call, and a caller reading `logprobs.content` got a TypeError.
    const noLogprobs = "log probabilities are not offered: no provider but OpenAI has them";
    if (body.logprobs === true) issues.addIssue({ code: "custom", path: ["logprobs"], message: noLogprobs });
    if (body.top_logprobs) issues.addIssue({ code: "custom", path: ["top_logprobs"], message: noLogprobs });
    // Dropped, a bias meant to ban words would let them through unseen; sent on, it would hold only when OpenAI
    // served the call, and token ids differ between its models anyway.
    if (body.logit_bias && Object.keys(body.logit_bias).length > 0) {
      issues.addIssue({
        code: "custom",
        path: ["logit_bias"],
        message: "token biases are not offered: token ids are one tokenizer's, and no provider but OpenAI takes them",
      });
    }
    for (const field of Object.keys(REFUSED_FIELDS) as (keyof typeof REFUSED_FIELDS)[]) {
      if (asksForRefused(field, body[field])) {
        issues.addIssue({ code: "custom", path: [field], message: REFUSED_FIELDS[field] });
      }
    }
    // A choice that forces a tool needs that tool: the provider would refuse it, after the call was charged for.
    const choice = body.tool_choice;
    if (choice === "required" && !body.tools?.length) {
      issues.addIssue({ code: "custom", path: ["tool_choice"], message: '"required" needs tools' });
    }
    if (typeof choice === "object" && choice !== null) {
      const named = choice.function.name;
      if (!body.tools?.some((tool) => tool.function.name === named)) {
        issues.addIssue({ code: "custom", path: ["tool_choice"], message: `no tool named "${named}" in tools` });
      }
    }
  })
  .openapi("ChatCompletionRequest", {
    description:
      "OpenAI chat-completions request. What would change the answer and cannot be honoured whichever provider serves the call is refused with 422 naming the field (`n` above 1, `logprobs: true`, `top_logprobs`, a non-empty `logit_bias`, `audio`, `modalities` other than text, `web_search_options`, the deprecated `functions` and `function_call`); OpenAI's fields that change no answer's content (`store`, `metadata`, `user`, `safety_identifier`, `prompt_cache_key`, `service_tier`, `prediction`, `verbosity`) are accepted and ignored, as is any field not described here.",
  });

export type ChatCompletionRequest = z.output<typeof ChatCompletionRequestSchema>;

export const ChatCompletionSchema = z
  .object({
    id: z.string(),
    object: z.literal("chat.completion"),
    created: z.number().int(),
    model: z.string(),
    choices: z.array(
      z.object({
        index: z.number().int(),
        message: z.object({
          role: z.literal("assistant"),
          content: z.string().nullable(),
          refusal: z
            .string()
            .nullable()
            .openapi({ description: "Why the model declined to answer (OpenAI's); null when it answered." }),
          tool_calls: z.array(z.unknown()).optional(),
        }),
        finish_reason: z.string(),
        logprobs: z.null(),
      }),
    ),
    usage: z.object({
      prompt_tokens: z.number().int(),
      completion_tokens: z.number().int(),
      total_tokens: z.number().int(),
      prompt_tokens_details: z.object({
        cached_tokens: z.number().int().openapi({
          description: "Of `prompt_tokens`, those the provider read from its prompt cache (billed at its cached rate).",
        }),
      }),
    }),
    x_mgx: z.object({
      provider: z.string(),
      simulated: z.boolean(),
      cost_usd: z.number(),
      attempts: z.number().int(),
      usage_estimated: z.boolean().openapi({
        description:
          "The provider reported no usage: `usage` and `cost_usd` are estimated (about four characters a token of English and code, one a character of Chinese, Japanese and Korean).",
      }),
      timed_out_attempts: z
        .array(
          z.object({
            provider: z.string(),
            model: z.string(),
            prompt_tokens: z.number().int(),
            cost_usd: z.number(),
          }),
        )
        .optional()
        .openapi({
          description:
            "Earlier attempts that timed out while a provider had the request, each charged the prompt it read (estimated, a usage row of its own); `usage` and `cost_usd` are the answer's alone. Absent when none did.",
        }),
    }),
  })
  .openapi("ChatCompletion", {
    description: "OpenAI chat-completions response, plus the router's figures in `x_mgx`.",
  });

function textOf(content: ChatCompletionRequest["messages"][number]["content"]): string | null {
  if (content === undefined || content === null) return null;
  if (typeof content === "string") return content;
  const texts = content.flatMap((part) => (part.type === "text" ? [part.text] : []));
  // Refusal parts alone are no text: the message's refusal carries them (see refusalOf).
  return texts.length === 0 && content.length > 0 ? null : texts.join("");
}

/** An assistant's refusal, given in its field or as content parts, as OpenAI takes either. */
function refusalOf(message: ChatCompletionRequest["messages"][number]): string | undefined {
  if (message.role !== "assistant") return undefined;
  const parts = Array.isArray(message.content)
    ? message.content.flatMap((part) => (part.type === "refusal" ? [part.refusal] : []))
    : [];
  return message.refusal || parts.join("") || undefined;
}

export function toChatRequest(body: ChatCompletionRequest): ChatRequest {
  const messages: ChatMessage[] = body.messages.map((message) => {
    const refusal = refusalOf(message);
    return {
      // `developer` is OpenAI's newer name for the system role.
      role: message.role === "developer" ? "system" : message.role,
      content: textOf(message.content),
      // Kept: OpenAI refuses an assistant message whose content is null with neither tool calls nor a refusal,
      // so a conversation that went on after a refusal failed with a 400 once the refusal was dropped.
      ...(refusal ? { refusal } : {}),
      ...(message.tool_calls ? { tool_calls: message.tool_calls } : {}),
      ...(message.tool_call_id ? { tool_call_id: message.tool_call_id } : {}),
      ...(message.name ? { name: message.name } : {}),
    };
  });
  const maxTokensValue = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  return {
    messages,
    ...(body.model ? { model: body.model } : {}),
    ...(body.tools?.length
      ? {
          tools: body.tools.map((tool) => ({
            type: "function" as const,
            function: {
              name: tool.function.name,
              ...(tool.function.description ? { description: tool.function.description } : {}),
              parameters: tool.function.parameters ?? { type: "object", properties: {} },
              // OpenAI then holds the arguments to the schema (structured outputs); dropping it drops that promise.
              ...(tool.function.strict != null ? { strict: tool.function.strict } : {}),
            },
          })),
        }
      : {}),
    ...(maxTokensValue !== undefined ? { max_tokens: maxTokensValue } : {}),
    ...(body.temperature != null ? { temperature: body.temperature } : {}),
    ...(body.top_p != null ? { top_p: body.top_p } : {}),
    // An empty list stops nothing: not sent, as some providers refuse it.
    ...(body.stop != null && body.stop.length > 0
      ? { stop: typeof body.stop === "string" ? [body.stop] : body.stop }
      : {}),
    ...(body.seed != null ? { seed: body.seed } : {}),
    ...(body.presence_penalty != null ? { presence_penalty: body.presence_penalty } : {}),
    ...(body.frequency_penalty != null ? { frequency_penalty: body.frequency_penalty } : {}),
    ...(body.response_format != null ? { response_format: body.response_format as ResponseFormat } : {}),
    ...(body.parallel_tool_calls != null ? { parallel_tool_calls: body.parallel_tool_calls } : {}),
    ...(body.reasoning_effort != null ? { reasoning_effort: body.reasoning_effort } : {}),
    ...(body.tool_choice != null
      ? {
          tool_choice:
            typeof body.tool_choice === "string" ? body.tool_choice : { name: body.tool_choice.function.name },
        }
      : {}),
  };
}

/** The completion's id, from the call's own ulid (which also keys its charge). */
export function completionId(callId: string): string {
  return `chatcmpl-${callId}`;
}

export function toCompletion(id: string, result: ChatResult) {
  return {
    id,
    object: "chat.completion" as const,
    created: Math.floor(Date.now() / 1000),
    model: result.model,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant" as const,
          content: result.message.content,
          // Always present, null when the model answered, as OpenAI sends it: the SDK's types promise
          // `string | null`, so a caller's `message.refusal !== null` took every answer for a refusal.
          refusal: result.message.refusal || null,
          ...(result.message.tool_calls ? { tool_calls: result.message.tool_calls } : {}),
        },
        finish_reason: result.finish_reason,
        logprobs: null,
      },
    ],
    usage: openAiUsage(result.usage),
    x_mgx: routerFigures(result),
  };
}

/** Our own figures for a call, beside OpenAI's: who answered, what it cost, what else was charged. */
function routerFigures(result: ChatResult): z.input<typeof ChatCompletionSchema>["x_mgx"] {
  const timedOut = result.timed_out_attempts;
  return {
    provider: result.provider,
    simulated: result.simulated,
    cost_usd: result.cost_usd,
    attempts: result.attempts,
    usage_estimated: result.usage_estimated,
    ...(timedOut
      ? {
          timed_out_attempts: timedOut.map(timedOutAttemptView),
        }
      : {}),
  };
}

/** Usage in OpenAI's terms: its SDKs and dashboards read cached input under `prompt_tokens_details`. */
function openAiUsage({ cached_prompt_tokens, ...usage }: TokenUsage) {
  return { ...usage, prompt_tokens_details: { cached_tokens: cached_prompt_tokens ?? 0 } };
}

const encoder = new TextEncoder();

/**
 * The SSE body of a streamed answer: a chunk per delta as it arrives, then
 * the finish reason, the usage chunk (when asked for, as OpenAI does), and
 * `[DONE]`. A failure after the first byte can only be reported in-stream.
 */
export function completionStream(
  id: string,
  model: string,
  deltas: AsyncIterable<StreamEvent>,
  result: Promise<ChatResult>,
  includeUsage: boolean,
  onError: (error: unknown) => void,
): ReadableStream<Uint8Array> {
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    encoder.encode(
      `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices, ...extra })}\n\n`,
    );
  const iterator = deltas[Symbol.asyncIterator]();
  let first = true;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await iterator.next();
        if (!next.done) {
          const event = next.value;
          if (event.type !== "delta") return;
          const delta = {
            ...(first ? { role: "assistant" } : {}),
            ...(event.content !== undefined ? { content: event.content } : {}),
            ...(event.refusal !== undefined ? { refusal: event.refusal } : {}),
            ...(event.tool_calls ? { tool_calls: event.tool_calls } : {}),
          };
          first = false;
          controller.enqueue(chunk([{ index: 0, delta, finish_reason: null, logprobs: null }]));
          return;
        }
        const final = await result;
        if (first) {
          // No delta came (an empty answer): the role still opens the stream, as OpenAI's first chunk does;
          // the openai SDK's stream helper fails a stream without it ("missing role for choice 0").
          first = false;
          controller.enqueue(
            chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null, logprobs: null }]),
          );
        }
        controller.enqueue(chunk([{ index: 0, delta: {}, finish_reason: final.finish_reason, logprobs: null }]));
        if (includeUsage) {
          controller.enqueue(
            chunk([], {
              usage: openAiUsage(final.usage),
              x_mgx: routerFigures(final),
            }),
          );
        }
        controller.enqueue(encoder.encode("data: [DONE]\n\n"));
        controller.close();
      } catch (error) {
        onError(error);
        const message = error instanceof Error ? error.message : "the stream failed";
        controller.enqueue(
          encoder.encode(`data: ${JSON.stringify({ error: { message, type: "provider_error" } })}\n\n`),
        );
        controller.close();
      }
    },
    async cancel() {
      // The client went away: stop reading the provider (the router releases the reservation).
      await iterator.return?.();
    },
  });
}
