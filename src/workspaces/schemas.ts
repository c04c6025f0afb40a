import { z } from "@hono/zod-openapi";
import { SCOPES } from "../auth/principal.ts";
import { hasLoneSurrogate, LONE_SURROGATE_MODEL_MESSAGE, LONE_SURROGATE_TEXT_MESSAGE } from "../lib/unicode.ts";
import { DEFAULT_MODELS, modelSettingsProblem } from "../llm/routing.ts";
import { PLANS } from "./plans.ts";

/** Request and response schemas shared by the operator and workspace routes. */

/**
 * The slowest rate a limit may have: one request per 1,000 s. Any positive rate was taken, and one near zero
 * (5e-324) answered its 429s "retry after Infinity s." with `retry_after_seconds: null`, one of 1e-300 a
 * `Retry-After: 1e+297`, which is no HTTP delay.
 */
const MIN_REQUESTS_PER_SECOND = 0.001;

const keyRequestsPerSecond = () => z.number().min(MIN_REQUESTS_PER_SECOND).max(100_000);
const keyBurst = () => z.number().int().min(1).max(1_000_000);

export const LimitsSchema = z
  .object({
    requests_per_second: z.number().min(MIN_REQUESTS_PER_SECOND).max(100_000),
    burst: z.number().int().min(1).max(1_000_000),
    max_running_tasks: z.number().int().min(1).max(10_000),
    max_pending_tasks: z.number().int().min(0).max(1_000_000),
    key_requests_per_second: keyRequestsPerSecond().optional(),
    key_burst: keyBurst().optional(),
  })
  .openapi("WorkspaceLimits", {
    description:
      "Rate limit (token bucket: rate and burst) and task caps. `key_*` bound one key or user; default: the workspace's.",
  });

/**
 * Absent: unchanged. The `key_*` limits may also be null (as in a JSON merge patch): taken away, so a key's bucket is
 * the workspace's again. Without it, one set once could only be undone by moving the workspace to another plan.
 */
export const LimitsPatchSchema = LimitsSchema.partial()
  .extend({
    key_requests_per_second: keyRequestsPerSecond().nullable().optional(),
    key_burst: keyBurst().nullable().optional(),
  })
  .strict();

/** A budget left out of a PUT is named with what it takes: zod's "expected number" did not say null was one. */
const budgetAmount = () =>
  z.number({
    error: (issue) => (issue.input === undefined ? "is required: a number, or null for no budget" : undefined),
  });

/** Far above any workspace's spend, and low enough that the room left and the percentages used stay finite. */
const MAX_COST_BUDGET_USD = 1_000_000_000_000;
/**
 * Dollars are counted to 1e-8 (src/limits/budget-rules.ts): a positive budget under that is none to count in, and
 * one near Number.MIN_VALUE made its threshold percentage Infinity, an event the contract refuses and drops.
 */
const MIN_POSITIVE_COST_BUDGET_USD = 1e-8;
const costBudget = () =>
  budgetAmount()
    .min(0)
    .max(MAX_COST_BUDGET_USD)
    .refine((usd) => usd === 0 || usd >= MIN_POSITIVE_COST_BUDGET_USD, {
      message: "must be 0 or at least 0.00000001: dollars are counted to 1e-8",
    });

export const BudgetsSchema = z
  .object({
    daily_tokens: budgetAmount().int().min(0).nullable(),
    monthly_tokens: budgetAmount().int().min(0).nullable(),
    daily_cost_usd: costBudget().nullable(),
    monthly_cost_usd: costBudget().nullable(),
  })
  .openapi("Budgets", { description: "Token and cost budgets; null means none." });

/** Far above any model's list price per million tokens: a figure past it is a slip, not a price. */
const MAX_PRICE_PER_MILLION_USD = 10_000;
const perMillionUsd = (what: string) =>
  z
    .number()
    .min(0)
    .max(MAX_PRICE_PER_MILLION_USD)
    .openapi({ description: `USD per million ${what}.` });

export const ChainPriceSchema = z
  .object({
    input_per_million_usd: perMillionUsd("input tokens"),
    output_per_million_usd: perMillionUsd("output tokens"),
    cached_input_per_million_usd: perMillionUsd(
      "input tokens read from the provider's prompt cache; absent or null: the input price",
    )
      .nullable()
      .optional(),
  })
  // A misspelt cached rate would be dropped without a word, and cached input charged at the full input rate.
  .strict()
  .openapi("ChainPrice", {
    description:
      "What this workspace pays for this (provider, model), in place of the price table's: for an Azure deployment, a paid `local` server, or a model the table lacks (otherwise charged at a conservative $5 in / $15 out per million, `price_source: unknown` in GET /api/v1/llm/models). Used for the call's cost, its budget reservation and the `cost` strategy.",
  });

type ChainEntry = { provider: string; model: string; price?: z.infer<typeof ChainPriceSchema> | null };

/** Two entries for one (provider, model) with different prices: which one a call is charged at would be a guess. */
function refuseConflictingPrices(chain: ChainEntry[], ctx: z.RefinementCtx): void {
  const firstPrice = new Map<string, { index: number; price: string }>();
  for (const [index, entry] of chain.entries()) {
    const key = `${entry.provider}:${entry.model}`;
    const { input_per_million_usd, cached_input_per_million_usd, output_per_million_usd } = entry.price ?? {};
    // Absent and null say the same (no price; no cached rate), as GET /api/v1/providers shows them.
    const price = [input_per_million_usd, cached_input_per_million_usd, output_per_million_usd]
      .map((rate) => rate ?? "none")
      .join("/");
    const first = firstPrice.get(key);
    if (!first) firstPrice.set(key, { index, price });
    else if (first.price !== price) {
      ctx.addIssue({
        code: "custom",
        path: [index, "price"],
        message: `differs from the price of entry ${first.index}, the same provider and model`,
      });
    }
  }
}

/** A query string is the simulated provider's settings; any other provider is sent it as part of the model's name. */
function refuseModelSettings(entry: { provider: string; model: string }, ctx: z.RefinementCtx): void {
  const problem = modelSettingsProblem(entry.provider, entry.model);
  if (problem) ctx.addIssue({ code: "custom", path: ["model"], message: problem });
}

export const LlmRoutingSchema = z
  .object({
    strategy: z.enum(["fallback", "cost", "latency", "weighted"]).openapi({
      description:
        "Which chain entry a call tries first; the others follow as fallbacks. `fallback`: chain order. " +
        "`cost`: the cheapest model that fits the request (context window, max_tokens, tools). " +
        "`latency`: the lowest moving average of recent calls, unmeasured models first. " +
        "`weighted`: drawn by `weight`.",
    }),
    chain: z
      .array(
        z
          .object({
            // A provider the router has no adapter for could never serve a call: refused here, not at every call.
            provider: z.enum(Object.keys(DEFAULT_MODELS) as [string, ...string[]]),
            // Trimmed: a blank name (or one with stray spaces) is sent to the provider as is, and refused there.
            model: z
              .string()
              .trim()
              .min(1)
              .max(128)
              .refine((name) => !hasLoneSurrogate(name), LONE_SURROGATE_MODEL_MESSAGE),
            weight: z.number().min(0).max(1000).optional(),
            // Null as absent: the table's price.
            price: ChainPriceSchema.nullable().optional(),
          })
          // A misspelt `weight` would be dropped without a word, leaving every entry the same weight.
          .strict()
          .superRefine(refuseModelSettings),
      )
      .min(1)
      .max(10)
      .superRefine(refuseConflictingPrices),
  })
  .openapi("LlmRouting", { description: "How the workspace's LLM calls are routed." });

export const WorkspaceSchema = z
  .object({
    id: z.string().openapi({ example: "ws_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    name: z.string(),
    plan: z.enum(PLANS),
    limits: LimitsSchema,
    budgets: BudgetsSchema,
    llm: LlmRoutingSchema.nullable(),
    audit_retention_days: z.number().int(),
    created_at: z.string(),
    updated_at: z.string(),
    queue: z
      .object({ pending: z.number().int(), queued: z.number().int(), running: z.number().int() })
      .optional()
      .openapi({ description: "Tasks waiting for a slot, in the queue, and running." }),
  })
  .openapi("Workspace");

export const ScopeSchema = z.enum(SCOPES);

export const ApiKeySchema = z
  .object({
    id: z.string().openapi({ example: "key_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    name: z.string(),
    prefix: z
      .string()
      .openapi({ description: "The key's first characters, to tell keys apart.", example: "mgx_Ab3dE6gH" }),
    scopes: z.array(ScopeSchema),
    created_at: z.string(),
    created_by: z.string().nullable(),
    last_used_at: z.string().nullable(),
    expires_at: z.string().nullable(),
    revoked_at: z.string().nullable(),
  })
  .openapi("ApiKey");

export const CreatedApiKeySchema = ApiKeySchema.extend({
  key: z.string().openapi({ description: "The secret key. Shown once; store it now.", example: "mgx_…" }),
}).openapi("CreatedApiKey");

/** A workspace's name, as the operator and the workspace set it; stored as text, so well-formed. */
export const WorkspaceNameSchema = z
  .string()
  .trim()
  .min(1)
  .max(100)
  .refine((text) => !hasLoneSurrogate(text), LONE_SURROGATE_TEXT_MESSAGE);

/** The last instant with a four-digit year in UTC: 9999-12-31T23:59:59.999Z. */
const LAST_ISO_INSTANT_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

export const NewApiKeySchema = z
  .object({
    name: z
      .string()
      .trim()
      .min(1)
      .max(100)
      .refine((text) => !hasLoneSurrogate(text), LONE_SURROGATE_TEXT_MESSAGE),
    scopes: z.array(ScopeSchema).min(1).default(["tasks:read", "tasks:write", "events:read"]),
    expires_at: z.iso
      .datetime({ offset: true })
      // Not a date at all is the error above alone, not also "in the past".
      .refine((value) => !(Date.parse(value) <= Date.now()), "must be in the future")
      // Stored and shown in UTC: past year 9999 there (9999-12-31T23:59:59-05:00) it had a six-digit year,
      // `+010000-…`, no ISO 8601 date-time that strict parsers read.
      .refine(
        (value) => !(Date.parse(value) > LAST_ISO_INSTANT_MS),
        `must be no later than ${new Date(LAST_ISO_INSTANT_MS).toISOString()} (UTC)`,
      )
      .optional()
      .openapi({ description: "When the key stops working (ISO 8601). Default: never." }),
  })
  .strict()
  .openapi("NewApiKey");

export const IdParamSchema = (prefix: string, example: string) =>
  z.object({
    id: z
      .string()
      .max(64)
      .openapi({ param: { name: "id", in: "path" }, example, description: `A \`${prefix}_\` id.` }),
  });
