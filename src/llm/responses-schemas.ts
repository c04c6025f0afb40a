import { z } from "@hono/zod-openapi";
import { nestsDeeperThan } from "../lib/json-depth.ts";
import { hasLoneSurrogate, LONE_SURROGATE_ID_MESSAGE } from "../lib/unicode.ts";
import { ChatCompletionSchema, duplicateToolMessage, RequestedModelSchema } from "./openai-schemas.ts";
import { REASONING_EFFORTS } from "./types.ts";

/**
 * OpenAI's Responses API wire format of POST /api/v1/llm/responses, as zod schemas (which the OpenAPI document is
 * generated from). Responses are stored (src/llm/responses-store.ts), so `previous_response_id` and
 * `item_reference` items continue them; what needs a conversation object, a stored prompt or a background run,
 * and OpenAI's hosted tools, are refused with 422 naming the field; the rest maps onto a chat request
 * (src/llm/responses-compat.ts). Loose, so that fields the SDKs add pass through.
 */

const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * The fields a response keeps as they were sent (it echoes `tools`, `tool_choice` and `text`, and stores those and
 * its `input` items, extra fields and all), and the deepest they may nest. A value 20,000 levels deep overflowed
 * the stack when the answer was written, after the call was made and charged (a 500, or a stream that broke before
 * its first event); one 5,000 deep in an input item was refused by D1's JSON functions (they take 1,000 levels), the
 * response answered unstored with an error logged. Real requests nest a few levels; OpenAI's structured outputs
 * take 10.
 */
const KEPT_FIELDS = ["input", "tools", "tool_choice", "text"] as const;
const MAX_KEPT_NESTING_LEVELS = 100;

/** The longest item id kept, named by an item_reference or input_items' `after`. */
export const MAX_ITEM_ID_LENGTH = 256;

/** input_text (what a user or system says) and output_text (an assistant's earlier answer, sent back). */
const TextContentPart = z.object({ type: z.enum(["input_text", "output_text"]), text: z.string() }).loose();
const RefusalContentPart = z.object({ type: z.literal("refusal"), refusal: z.string() }).loose();

const MessageItem = z
  .object({
    type: z.literal("message").optional(),
    role: z.enum(["user", "assistant", "system", "developer"]),
    content: z.union([z.string(), z.array(z.union([TextContentPart, RefusalContentPart]))], {
      error:
        'must be a string or a list of text parts ({"type": "input_text" or "output_text", "text": …}): images, files and audio are not supported, as the chat path every provider takes carries text alone',
    }),
  })
  .loose();

const FunctionCallItem = z
  .object({
    type: z.literal("function_call"),
    call_id: z.string().min(1).max(256),
    name: z.string().min(1).max(256),
    arguments: z.string(),
  })
  .loose();

const FunctionCallOutputItem = z
  .object({
    type: z.literal("function_call_output"),
    call_id: z.string().min(1).max(256),
    output: z.union([z.string(), z.array(TextContentPart)], {
      error: "must be a string or a list of input_text parts: images and files are not supported",
    }),
  })
  .loose();

/** A reasoning model's earlier thinking, which clients send back as it came (Codex, `include: reasoning.encrypted_content`). */
const ReasoningItem = z.object({ type: z.literal("reasoning") }).loose();

/**
 * An item of a stored response (or of its input) by its id, as the Vercel AI SDK sends an earlier answer's text
 * unless told `store: false`: replaced by the stored item before the call (src/llm/responses-store.ts).
 */
const ItemReference = z
  .object({ type: z.literal("item_reference"), id: z.string().min(1).max(MAX_ITEM_ID_LENGTH) })
  .loose();

/** Each input item by its type, so that a refusal names the field (`input.0.content`), not the whole input. */
const INPUT_ITEM_SCHEMAS = {
  message: MessageItem,
  function_call: FunctionCallItem,
  function_call_output: FunctionCallOutputItem,
  reasoning: ReasoningItem,
  item_reference: ItemReference,
} as const;

const UNSUPPORTED_ITEM =
  "must be a message (role user, assistant, system or developer), a function_call, a function_call_output, a reasoning item or an item_reference: hosted tools' calls need tools that are not offered";

/** Any other item: documented, and refused by the request's refinement, which names the field (`input.N.type`). */
const OtherItem = z.object({ type: z.string().optional() }).loose().openapi({
  description:
    "Any other item (a hosted tool's call) is refused with 422 naming `input.N.type`; a message whose content holds images, files or audio, naming `input.N.content`.",
});

const InputItem = z.union([
  MessageItem.openapi("ResponseInputMessage"),
  FunctionCallItem.openapi("ResponseInputFunctionCall"),
  FunctionCallOutputItem.openapi("ResponseInputFunctionCallOutput", {
    description:
      "A tool's result for a function_call made before it in the conversation (earlier in `input`, or in `previous_response_id`'s stored conversation): one whose `call_id` matches no such call is refused with 422 naming `input.N.call_id`, before any provider is called.",
  }),
  ReasoningItem.openapi({ description: "A reasoning model's earlier thinking: accepted and dropped." }),
  ItemReference.openapi("ResponseInputItemReference", {
    description:
      "An item of a stored response of this workspace (its output, or its input) by id: replaced by that item. An id not found (never stored, `store: false`, deleted, expired, another workspace's) is refused with 400, `param` `input`.",
  }),
  OtherItem,
]);

type InputItemOf = { [type in keyof typeof INPUT_ITEM_SCHEMAS]: z.output<(typeof INPUT_ITEM_SCHEMAS)[type]> };
/** An input item as sent: references included. */
export type ResponsesRequestItem = InputItemOf[keyof InputItemOf];
/** An input item once references are resolved: what a conversation is made of, and what a response stores. */
export type ResponsesInputItem = Exclude<ResponsesRequestItem, { type: "item_reference" }> & { id?: string };
export type ResponsesItemReference = InputItemOf["item_reference"];

const FunctionTool = z
  .object({
    type: z.literal("function"),
    name: z
      .string()
      .regex(TOOL_NAME, "must be 1 to 64 letters, digits, underscores or dashes, as OpenAI and Anthropic require"),
    description: z.string().nullable().optional(),
    parameters: z.record(z.string(), z.unknown()).nullable().optional(),
    strict: z.boolean().nullable().optional(),
  })
  .loose();

/** Any other tool: documented, and refused by the request's refinement, which names `tools.N.type`. */
const ToolSchema = z.union([
  FunctionTool.openapi("ResponsesFunctionTool"),
  z
    .object({ type: z.string() })
    .loose()
    .openapi({ description: "Any other tool type (OpenAI's hosted tools, custom tools) is refused with 422." }),
]);

const ToolChoiceSchema = z.union(
  [
    z.enum(["auto", "none", "required"]),
    z.object({ type: z.literal("function"), name: z.string().min(1).max(64) }).loose(),
  ],
  {
    error:
      'must be "auto", "none", "required" or {"type": "function", "name": …} naming one of tools: hosted tools, allowed_tools and custom tools are not offered',
  },
);

const TextFormatSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }).loose(),
  z.object({ type: z.literal("json_object") }).loose(),
  z
    .object({
      type: z.literal("json_schema"),
      name: z.string().min(1).max(64),
      description: z.string().optional(),
      schema: z.record(z.string(), z.unknown()),
      strict: z.boolean().nullable().optional(),
    })
    .loose(),
]);

/** What needs a conversation object, a stored prompt or a background run: none is offered here. */
const STATEFUL_FIELDS = {
  conversation:
    "conversation objects are not offered: continue a stored response with `previous_response_id`, or send the whole conversation as `input`",
  prompt: "stored prompts are not offered: send `instructions` and `input`",
  background:
    "background responses are not offered: an answer comes in its request (`stream: true` to read it as it comes)",
} as const;

const HOSTED_TOOL_MESSAGE =
  "only function tools are offered: OpenAI's hosted tools (web_search, file_search, code_interpreter, computer_use, image_generation, mcp, …) and custom tools run at OpenAI alone";

function ignored<T extends z.ZodType>(schema: T, why: string) {
  return schema
    .nullable()
    .optional()
    .openapi({ description: `Accepted and ignored: ${why}` });
}

function statefulField(field: keyof typeof STATEFUL_FIELDS) {
  return z
    .unknown()
    .optional()
    .openapi({ description: `Refused with 422 unless null (or false): ${STATEFUL_FIELDS[field]}.` });
}

export const ResponseCreateRequestSchema = z
  .object({
    model: RequestedModelSchema.optional().openapi({
      description:
        "As chat completions' `model`: `provider:model`, a bare model name, or `auto`; the workspace's chain follows as fallbacks.",
    }),
    input: z
      .union([z.string(), z.array(InputItem).min(1).max(2_000)], {
        error: (issue) =>
          issue.input === undefined
            ? "is required: the user's text, or the conversation as a list of items"
            : "must be a string or a list of input items",
      })
      .openapi({
        description:
          "The user's text, or a list of items; with `previous_response_id`, what follows that response's conversation.",
      }),
    instructions: z.string().nullable().optional().openapi({
      description:
        "A system message before the conversation. Not carried over by `previous_response_id`: only this request's apply, as at OpenAI.",
    }),
    tools: z
      .array(ToolSchema)
      .max(128)
      .nullable()
      .optional()
      .openapi({
        description: `Function tools (\`{type: "function", name, description, parameters, strict}\`); ${HOSTED_TOOL_MESSAGE}, so they are refused with 422.`,
      }),
    tool_choice: ToolChoiceSchema.nullable().optional(),
    parallel_tool_calls: z
      .boolean()
      .nullable()
      .optional()
      .openapi({ description: "With tools: false asks for at most one tool call per answer." }),
    max_output_tokens: z.number().int().min(1).max(1_000_000).nullable().optional(),
    temperature: z.number().min(0).max(2).nullable().optional(),
    top_p: z.number().min(0).max(1).nullable().optional(),
    text: z
      .object({
        format: TextFormatSchema.nullable().optional(),
        verbosity: ignored(z.string(), "answers come at each model's default length."),
      })
      .loose()
      .nullable()
      .optional()
      .openapi({ description: "`format`: text, json_object or json_schema, as chat completions' `response_format`." }),
    reasoning: z
      .object({
        effort: z.enum(REASONING_EFFORTS).nullable().optional(),
        summary: ignored(z.string(), "no reasoning summary is returned."),
        generate_summary: ignored(z.string(), "no reasoning summary is returned."),
      })
      .loose()
      .nullable()
      .optional()
      .openapi({ description: "`effort` for reasoning models (OpenAI's o-series and gpt-5); others are not sent it." }),
    stream: z.boolean().nullable().optional(),
    store: z.boolean().nullable().optional().openapi({
      description:
        "True (or absent, as at OpenAI): the response is stored for 30 days before it is answered (before `response.completed` in a stream), so GET /api/v1/llm/responses/{id} reads it and a later request continues it with `previous_response_id` or refers to its items with `item_reference`. False: nothing is kept, and no later request can refer to it.",
    }),
    previous_response_id: z.string().min(1).max(256).nullable().optional().openapi({
      description:
        "A stored response of this workspace: its conversation (each earlier response's input and output, in order) comes before `input`, and is what the provider is sent and charged for. Unknown, `store: false`, deleted, past its 30 days or another workspace's: 400 `previous_response_not_found`.",
    }),
    metadata: z
      .record(z.string(), z.string())
      .nullable()
      .optional()
      .openapi({ description: "Tags echoed on the response (and kept with it when stored); not sent to providers." }),
    user: ignored(z.string().max(256), "not sent to providers."),
    safety_identifier: ignored(z.string(), "not sent to providers; the caller is known by its key."),
    prompt_cache_key: ignored(z.string(), "not sent to providers, which cache prompt prefixes on their own."),
    service_tier: ignored(z.string(), "calls go at each provider's default tier."),
    truncation: ignored(z.string(), "the input is sent whole; one too long for every model is refused by it."),
    include: ignored(
      z.array(z.string()),
      "no reasoning items, log probabilities or hosted tools' results are returned.",
    ),
    stream_options: ignored(z.object({}).loose(), "events are sent as they are."),
    top_logprobs: z
      .number()
      .int()
      .min(0)
      .max(20)
      .nullable()
      .optional()
      .openapi({ description: "Only 0: log probabilities are refused with 422, as no provider but OpenAI has them." }),
    conversation: statefulField("conversation"),
    prompt: statefulField("prompt"),
    background: statefulField("background"),
  })
  .loose()
  .superRefine((body, issues) => {
    for (const field of KEPT_FIELDS) {
      if (nestsDeeperThan(body[field], MAX_KEPT_NESTING_LEVELS)) {
        issues.addIssue({
          code: "custom",
          path: [field],
          message: `must not be nested more than ${MAX_KEPT_NESTING_LEVELS} levels deep: the response keeps it as sent`,
        });
      }
    }
    for (const field of Object.keys(STATEFUL_FIELDS) as (keyof typeof STATEFUL_FIELDS)[]) {
      const value = body[field];
      if (value !== undefined && value !== null && value !== false) {
        issues.addIssue({ code: "custom", path: [field], message: STATEFUL_FIELDS[field] });
      }
    }
    const functionNames: string[] = [];
    body.tools?.forEach((tool, index) => {
      if (tool.type !== "function") {
        issues.addIssue({ code: "custom", path: ["tools", index, "type"], message: HOSTED_TOOL_MESSAGE });
        return;
      }
      const parsed = FunctionTool.safeParse(tool);
      if (!parsed.success) {
        for (const issue of parsed.error.issues) {
          issues.addIssue({ code: "custom", path: ["tools", index, ...issue.path], message: issue.message });
        }
        return;
      }
      if (functionNames.includes(parsed.data.name)) {
        issues.addIssue({
          code: "custom",
          path: ["tools", index, "name"],
          message: duplicateToolMessage(parsed.data.name),
        });
      }
      functionNames.push(parsed.data.name);
    });
    if (body.top_logprobs) {
      issues.addIssue({
        code: "custom",
        path: ["top_logprobs"],
        message: "log probabilities are not offered: no provider but OpenAI has them",
      });
    }
    if (Array.isArray(body.input)) {
      body.input.forEach((item, index) => {
        const type = item.type ?? "message";
        // Own keys only: `in` also finds Object.prototype's (`constructor`, `toString`), which are no schemas.
        if (!Object.hasOwn(INPUT_ITEM_SCHEMAS, type)) {
          issues.addIssue({ code: "custom", path: ["input", index, "type"], message: UNSUPPORTED_ITEM });
          return;
        }
        const parsed = INPUT_ITEM_SCHEMAS[type as keyof typeof INPUT_ITEM_SCHEMAS].safeParse(item);
        if (!parsed.success) {
          for (const issue of parsed.error.issues) {
            issues.addIssue({ code: "custom", path: ["input", index, ...issue.path], message: issue.message });
          }
          return;
        }
        // An item's id (the client's own, or an item_reference's) is a key in D1 (UTF-8), where half a surrogate
        // pair becomes U+FFFD: listed by input_items as sent, such an item was never found by an item_reference.
        const { id } = item as { id?: unknown };
        if (typeof id === "string" && hasLoneSurrogate(id)) {
          issues.addIssue({ code: "custom", path: ["input", index, "id"], message: LONE_SURROGATE_ID_MESSAGE });
        }
        // As long as an item_reference's id and input_items' `after` may be: a longer one was stored and listed,
        // and then could be named by neither.
        if (typeof id === "string" && id.length > MAX_ITEM_ID_LENGTH) {
          issues.addIssue({
            code: "custom",
            path: ["input", index, "id"],
            message: `must be at most ${MAX_ITEM_ID_LENGTH} characters, as an item_reference's id and input_items' \`after\` are`,
          });
        }
        const message = parsed.data as Partial<InputItemOf["message"]>;
        if (message.role && message.role !== "assistant" && Array.isArray(message.content)) {
          if (message.content.some((part) => part.type === "refusal")) {
            issues.addIssue({
              code: "custom",
              path: ["input", index, "content"],
              message: "only an assistant's content may hold refusal parts",
            });
          }
        }
      });
    }
    // A choice that forces a tool needs that tool: the provider would refuse it, after the call was charged for.
    const choice = body.tool_choice;
    if (choice === "required" && functionNames.length === 0) {
      issues.addIssue({ code: "custom", path: ["tool_choice"], message: '"required" needs tools' });
    }
    if (typeof choice === "object" && choice !== null && !functionNames.includes(choice.name)) {
      issues.addIssue({ code: "custom", path: ["tool_choice"], message: `no tool named "${choice.name}" in tools` });
    }
  })
  .openapi("ResponseCreateRequest", {
    description:
      "OpenAI Responses request. Stored unless `store: false`, and continued with `previous_response_id` or `item_reference` items; `conversation`, `prompt` and `background: true` are refused with 422 naming the field, as are tools other than functions, function tools sharing a name, input images and files, an input item's `id` over 256 characters (what `item_reference` and input_items' `after` take), and `top_logprobs`. OpenAI's fields that change no answer's content (`user`, `safety_identifier`, `prompt_cache_key`, `service_tier`, `truncation`, `include`, `text.verbosity`, `reasoning.summary`) are accepted and ignored, as is any field not described here.",
  });

export type ResponseCreateRequest = z.output<typeof ResponseCreateRequestSchema>;
export type ResponsesFunctionTool = z.output<typeof FunctionTool>;
export { FunctionTool as ResponsesFunctionToolSchema };

const OutputText = z.object({
  type: z.literal("output_text"),
  text: z.string(),
  annotations: z.array(z.unknown()),
  logprobs: z.array(z.unknown()),
});
const OutputRefusal = z.object({ type: z.literal("refusal"), refusal: z.string() });
const ItemStatus = z.enum(["in_progress", "completed", "incomplete"]);

const OutputMessage = z.object({
  type: z.literal("message"),
  id: z.string(),
  status: ItemStatus,
  role: z.literal("assistant"),
  content: z.array(z.union([OutputText, OutputRefusal])),
});

const OutputFunctionCall = z.object({
  type: z.literal("function_call"),
  id: z.string(),
  call_id: z.string(),
  name: z.string(),
  arguments: z.string().openapi({ description: "JSON text, as the model wrote it." }),
  status: ItemStatus,
});

export type ResponseOutputItem = z.input<typeof OutputMessage> | z.input<typeof OutputFunctionCall>;
export type ResponseOutputPart = z.input<typeof OutputText> | z.input<typeof OutputRefusal>;

export const ResponseObjectSchema = z
  .object({
    id: z.string().openapi({ example: "resp_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    object: z.literal("response"),
    created_at: z.number().int(),
    status: z.enum(["completed", "incomplete", "in_progress", "failed"]).openapi({
      description:
        "`incomplete` when the answer was cut at `max_output_tokens` or by a content filter (`incomplete_details.reason`); `in_progress` and `failed` only in a stream's events.",
    }),
    incomplete_details: z.object({ reason: z.enum(["max_output_tokens", "content_filter"]) }).nullable(),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    model: z.string(),
    output: z.array(z.union([OutputMessage, OutputFunctionCall])),
    instructions: z.string().nullable(),
    tools: z.array(z.unknown()),
    tool_choice: z.unknown(),
    parallel_tool_calls: z.boolean(),
    temperature: z.number().nullable(),
    top_p: z.number().nullable(),
    max_output_tokens: z.number().int().nullable(),
    previous_response_id: z.string().nullable(),
    reasoning: z.object({ effort: z.string().nullable(), summary: z.null() }),
    text: z.object({ format: z.object({ type: z.string() }).loose() }),
    truncation: z.literal("disabled"),
    store: z.boolean().openapi({
      description:
        "Whether the response is stored: true when it was (or, in a stream's events before its end, will be), false when `store: false` was asked or it could not be kept (larger than a stored row may be).",
    }),
    metadata: z.record(z.string(), z.string()),
    user: z.string().nullable(),
    usage: z
      .object({
        input_tokens: z.number().int(),
        input_tokens_details: z.object({ cached_tokens: z.number().int() }),
        output_tokens: z.number().int(),
        output_tokens_details: z.object({
          reasoning_tokens: z.number().int().openapi({
            description: "Of `output_tokens`, the hidden reasoning of a reasoning model (OpenAI's o-series, gpt-5).",
          }),
        }),
        total_tokens: z.number().int(),
      })
      .nullable()
      .openapi({
        description:
          "Null in a stream's events before its end, and in `response.failed` (the call is charged all the same, as GET /api/v1/usage shows: estimated when the provider told no usage).",
      }),
    x_mgx: ChatCompletionSchema.shape.x_mgx.optional().openapi({ description: "The router's figures for the call." }),
  })
  .openapi("Response", {
    description:
      "OpenAI Responses response, plus the router's figures in `x_mgx`. `output_text` is not sent, as OpenAI sends none: its SDKs compute it from `output`.",
  });
