import { z } from "@hono/zod-openapi";
import { UnfinishedAttemptSchema } from "../lib/openapi.ts";
import { hasLoneSurrogate, LONE_SURROGATE_MODEL_MESSAGE } from "../lib/unicode.ts";
import { REASONING_EFFORTS } from "./types.ts";

/**
 * The OpenAI chat-completions wire format of POST /api/v1/llm/chat/completions,
 * as zod schemas (which the OpenAPI document is generated from): the request,
 * loose so that fields the official SDKs add pass through, with what it refuses
 * and what it ignores; and the answer, with our own figures under `x_mgx`.
 * src/llm/openai-compat.ts maps them to and from the router's types.
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
    // Null is absent here as in the request's own fields: openai-python's `message.model_dump()` and LiteLLM's
    // messages send an answer back with `tool_calls`, `function_call` and `audio` null, which OpenAI takes.
    name: z.string().max(256).nullable().optional(),
    /** An assistant's refusal, as OpenAI answered it: the SDK sends the message back as it came, content null. */
    refusal: z.string().nullable().optional(),
    tool_call_id: z.string().max(256).nullable().optional(),
    tool_calls: z
      .array(
        z.object({
          id: z.string().max(256),
          type: z.literal("function"),
          function: z.object({ name: z.string().max(256), arguments: z.string() }),
        }),
      )
      .nullable()
      .optional(),
    // Null only (model_dump()'s): dropped, a legacy call left the message empty, and OpenAI refused it as content null.
    function_call: z
      .null({ error: "legacy function calls are not supported: send them as tool_calls, as OpenAI's SDKs do" })
      .optional(),
    audio: z.null({ error: "audio answers are not supported: send their transcript as content" }).optional(),
  })
  .loose();

/** A tool named as an earlier one of the same request: tool names must be unique (OpenAI and Anthropic refuse repeats). */
export function duplicateToolMessage(name: string): string {
  return `names an earlier tool too ("${name}"): tool names must be unique in a request, as OpenAI and Anthropic require`;
}

const ToolSchema = z
  .object({
    type: z.literal("function"),
    function: z
      .object({
        // OpenAI's and Anthropic's rule alike: refused here, not by the provider after the call was routed (and
        // answered by the simulated provider, which would take any name).
        name: z
          .string()
          .regex(
            /^[a-zA-Z0-9_-]{1,64}$/,
            "must be 1 to 64 letters, digits, underscores or dashes, as OpenAI and Anthropic require",
          ),
        // Not bounded but by the body's size, as OpenAI's (which dropped its 1,024 characters) and Anthropic's are
        // not: agents' tools (a coding agent's shell tool, MCP servers') describe themselves in thousands.
        description: z.string().nullable().optional(),
        parameters: z.record(z.string(), z.unknown()).nullable().optional(),
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

const ToolChoiceSchema = z.union(
  [
    z.enum(["auto", "none", "required"]),
    z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1).max(64) }) }).loose(),
  ],
  {
    // Said in full: zod's own message for a union is "Invalid input", which names neither what was wrong nor what is taken.
    error:
      'must be "auto", "none", "required" or {"type": "function", "function": {"name": …}} naming one of tools: OpenAI\'s allowed_tools and custom tool choices are not supported',
  },
);

const ResponseFormatSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z
      .object({
        name: z.string().min(1).max(64),
        // Bounded by the body's size alone, as a tool's description is.
        description: z.string().nullable().optional(),
        schema: z.record(z.string(), z.unknown()).nullable().optional(),
        strict: z.boolean().nullable().optional(),
      })
      .loose(),
  }),
]);

/** A model as a request names it (`provider:model`, a bare name, or `auto`), for chat completions and responses. */
export const RequestedModelSchema = z
  .string()
  .max(256)
  .refine((name) => !hasLoneSurrogate(name), LONE_SURROGATE_MODEL_MESSAGE);

export const ChatCompletionRequestSchema = z
  .object({
    model: RequestedModelSchema.optional().openapi({
      description:
        "`provider:model`, tried first; or a bare model name, resolved as GET /api/v1/llm/models/{model} resolves it (the chain's entries with that model, else the first configured provider serving it) and tried there first; or `auto`. The chain follows as fallbacks; `auto`, or a name no configured provider serves, lets the chain decide.",
    }),
    messages: z.array(MessageSchema).min(1).max(2_000),
    tools: z.array(ToolSchema).max(128).nullable().optional(),
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
    stream_options: z.object({ include_usage: z.boolean().nullable().optional() }).loose().nullable().optional(),
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
      // As OpenAI requires it: sent without, every provider refused the call (Anthropic's tool_result names no call).
      if (message.role === "tool" && !message.tool_call_id) {
        issues.addIssue({
          code: "custom",
          path: ["messages", index, "tool_call_id"],
          message: "a tool message needs the tool_call_id of the call it answers",
        });
      }
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
    // Anthropic refuses a request whose tools share a name ("Tool names must be unique"), as OpenAI does: refused
    // here, naming the repeat, not by the provider after the call was routed.
    const named = new Set<string>();
    body.tools?.forEach((tool, index) => {
      const { name } = tool.function;
      if (named.has(name)) {
        issues.addIssue({
          code: "custom",
          path: ["tools", index, "function", "name"],
          message: duplicateToolMessage(name),
        });
      }
      named.add(name);
    });
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
      "OpenAI chat-completions request. What would change the answer and cannot be honoured whichever provider serves the call is refused with 422 naming the field (`n` above 1, `logprobs: true`, `top_logprobs`, a non-empty `logit_bias`, `audio`, `modalities` other than text, `web_search_options`, the deprecated `functions` and `function_call`, tools sharing a name); OpenAI's fields that change no answer's content (`store`, `metadata`, `user`, `safety_identifier`, `prompt_cache_key`, `service_tier`, `prediction`, `verbosity`) are accepted and ignored, as is any field not described here.",
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
      completion_tokens_details: z
        .object({
          reasoning_tokens: z.number().int().openapi({
            description:
              "Of `completion_tokens`, the hidden reasoning of a reasoning model (OpenAI's o-series, gpt-5).",
          }),
        })
        .optional()
        .openapi({ description: "Present when the provider reported reasoning tokens." }),
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
      timed_out_attempts: z.array(UnfinishedAttemptSchema).optional().openapi({
        description:
          "Earlier attempts that timed out while a provider had the request, each charged the prompt it read and what it had written of a long answer asked as a stream (estimated, a usage row of its own); `usage` and `cost_usd` are the answer's alone. Absent when none did.",
      }),
      interrupted_attempts: z.array(UnfinishedAttemptSchema).optional().openapi({
        description:
          "Earlier attempts whose answer broke after it began (the connection dropped, or the provider sent an error in its stream) and that were retried or failed over, each charged the prompt it read and what it had written (estimated, a usage row of its own); `usage` and `cost_usd` are the answer's alone. Absent when none did.",
      }),
    }),
  })
  .openapi("ChatCompletion", {
    description: "OpenAI chat-completions response, plus the router's figures in `x_mgx`.",
  });
