import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { tenantDb } from "../auth/tenant-access.ts";
import { API_PROBLEMS, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { DEFAULT_MODELS } from "../llm/routing.ts";
import { usageSummary } from "../llm/usage.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";

/** Tokens and cost by day, provider and model. */

const DAY = z.iso.date("must be a calendar day, YYYY-MM-DD");
const DAY_MS = 86_400_000;
const DEFAULT_DAYS = 30;
const MAX_DAYS = 366;
/** The first day `DAY` takes: a default range that would begin before it begins there (an earlier one is no YYYY-MM-DD). */
const FIRST_DAY_MS = Date.parse("0000-01-01");

const UsageRowSchema = z.object({
  day: z.string(),
  provider: z.string(),
  model: z.string(),
  simulated: z.boolean().openapi({ description: "From the offline `simulated` provider: not real spend." }),
  calls: z.number().int().openapi({
    description:
      "Calls charged, each once however many attempts it took: those answered, and those cut short or cancelled while a provider had the request. Attempts that timed out or broke mid-answer are not calls (`timed_out_attempts`, `interrupted_attempts`).",
  }),
  estimated_calls: z.number().int().openapi({
    description:
      "Of `calls`, those charged from an estimate because the provider's figures never came (a stream its client left or that failed mid-answer, a call cancelled in flight, or a provider that reports no usage).",
  }),
  timed_out_attempts: z.number().int().openapi({
    description:
      "Attempts that timed out while a provider had the request, each charged its prompt (estimated; providers bill a request whose client stopped waiting), whether or not a later attempt answered. Not counted in `calls` or `estimated_calls`; their tokens and cost are in the sums.",
  }),
  interrupted_attempts: z.number().int().openapi({
    description:
      "Attempts whose answer broke after it began (the connection dropped, or the provider sent an error in its stream), each charged its prompt and what the provider had written (estimated; providers bill both). Counted as `timed_out_attempts` are: not in `calls`; their tokens and cost are in the sums. Days summed before this field was added charged them nothing.",
  }),
  prompt_tokens: z.number().int(),
  cached_prompt_tokens: z.number().int().openapi({
    description:
      "Of `prompt_tokens`, those the provider read from its prompt cache (OpenAI caches long prompts by itself), charged at its cached-input rate.",
  }),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
  cost_usd: z.number(),
});

/** The answer: rows per day, provider and model, and their totals (the client SDK's `Usage` type too). */
export const UsageSchema = z
  .object({
    from: z.string(),
    to: z.string(),
    data: z.array(UsageRowSchema),
    totals: UsageRowSchema.omit({ day: true, provider: true, model: true, simulated: true }),
  })
  .openapi("Usage");

const usageRoute = createRoute({
  method: "get",
  path: "/api/v1/usage",
  operationId: "getUsage",
  tags: ["LLM"],
  summary: "Read token usage and cost",
  description: `Per UTC day, provider and model, between \`from\` and \`to\` (inclusive; default the last ${DEFAULT_DAYS} days, at most ${MAX_DAYS}), optionally of one provider or model; \`totals\` sums the rows returned.`,
  middleware: [requireScope("tasks:read")] as const,
  request: {
    query: z.object({
      from: DAY.optional().openapi({ description: "First day, YYYY-MM-DD." }),
      to: DAY.optional().openapi({ description: "Last day, YYYY-MM-DD (default today)." }),
      // One the router knows: a misspelt name (`OpenAI`) would otherwise answer no usage at all, as if none were spent.
      provider: z
        .enum(Object.keys(DEFAULT_MODELS) as [string, ...string[]])
        .optional()
        .openapi({ description: "Only this provider's rows, e.g. `openai`." }),
      model: z
        .string()
        .min(1)
        .max(256)
        .optional()
        .openapi({ description: "Only this model's rows, as the rows name it, e.g. `gpt-4o-mini`." }),
    }),
  },
  responses: {
    200: {
      description: "Usage.",
      content: {
        "application/json": {
          schema: UsageSchema,
        },
      },
    },
    ...API_PROBLEMS,
    ...problemResponses("VALIDATION_FAILED"),
  },
});

export function registerUsageRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(usageRoute, async (c) => {
    const query = c.req.valid("query");
    const to = query.to ?? new Date().toISOString().slice(0, 10);
    const from =
      query.from ??
      new Date(Math.max(FIRST_DAY_MS, Date.parse(to) - (DEFAULT_DAYS - 1) * DAY_MS)).toISOString().slice(0, 10);
    const spanDays = (Date.parse(to) - Date.parse(from)) / DAY_MS + 1;
    if (Number.isNaN(spanDays) || spanDays < 1 || spanDays > MAX_DAYS) {
      throw new ApiError("VALIDATION_FAILED", "Invalid date range.", {
        errors: [
          {
            path: "from",
            // A `to` left out is today: said so, since a caller who sent none was told of a `to` it never sent.
            message: `must be a valid day on or before \`to\` (${query.to === undefined ? `today, ${to}, when not given` : to}), at most ${MAX_DAYS} days earlier`,
          },
        ],
      });
    }
    const data = await usageSummary(tenantDb(c), {
      fromDay: from,
      toDay: to,
      provider: query.provider,
      model: query.model,
    });
    const totals = {
      calls: 0,
      estimated_calls: 0,
      timed_out_attempts: 0,
      interrupted_attempts: 0,
      prompt_tokens: 0,
      cached_prompt_tokens: 0,
      completion_tokens: 0,
      total_tokens: 0,
      cost_usd: 0,
    };
    for (const row of data) {
      totals.calls += row.calls;
      totals.estimated_calls += row.estimated_calls;
      totals.timed_out_attempts += row.timed_out_attempts;
      totals.interrupted_attempts += row.interrupted_attempts;
      totals.prompt_tokens += row.prompt_tokens;
      totals.cached_prompt_tokens += row.cached_prompt_tokens;
      totals.completion_tokens += row.completion_tokens;
      totals.total_tokens += row.total_tokens;
      totals.cost_usd += row.cost_usd;
    }
    totals.cost_usd = Math.round(totals.cost_usd * 1e8) / 1e8;
    return c.json({ from, to, data, totals }, 200);
  });
}
