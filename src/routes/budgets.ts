import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import type { Context } from "hono";
import { auditContext, auditInsert } from "../audit/index.ts";
import { tenantDb } from "../auth/tenant-access.ts";
import { workspaces } from "../db/schema.ts";
import { API_PROBLEMS, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { budgetStatus, forgetWorkspaceSettings } from "../llm/index.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";
import { BudgetsSchema } from "../workspaces/schemas.ts";
import { findWorkspace } from "../workspaces/service.ts";

/** The workspace's daily and monthly token and cost budgets, and where it stands against them. */

const PeriodSchema = z.object({
  period: z.string().openapi({ example: "2026-11-25" }),
  tokens: z
    .number()
    .int()
    .openapi({ description: "Charged so far. A call that drew on a budget lease is counted within about 250 ms." }),
  cost_usd: z.number(),
  reserved_tokens: z.number().int().openapi({
    description:
      "Held by calls in flight (each holds the most it may spend: its prompt and max_tokens, or without one the longest answer its model may give: `max_output_tokens` in GET /api/v1/llm/models, 32,768 tokens where unknown; near a limit, what its answer cut to fit may spend) and by the budget leases lent to isolates; a call gives back what it did not spend when it settles, a lease when it closes, or within two minutes. A call that finds nothing left but what others hold is refused with a retryable 429 `budget_held`.",
  }),
  reserved_cost_usd: z.number(),
  resets_at: z.string(),
  thresholds_reached: z
    .array(
      z.object({
        metric: z.enum(["tokens", "cost_usd"]),
        threshold_percent: z.number().int().openapi({ example: 80 }),
        reached_at: z.string(),
      }),
    )
    .openapi({
      description:
        "The 50/80/100% steps this period has reported (each once, as `billing.threshold.reached`), in the order they were reached.",
    }),
});

/** A workspace's budgets and what each period has used of them (the client SDK's `BudgetStatus` type too). */
export const BudgetStatusSchema = z
  .object({
    budgets: BudgetsSchema,
    daily: PeriodSchema,
    monthly: PeriodSchema,
    exhausted: z.boolean().openapi({
      description:
        "Some budget is spent (charged up to its limit): LLM calls and new tasks are refused until its period resets. What calls in flight hold does not count.",
    }),
    exhausted_by: z
      .array(
        z.object({
          period: z.enum(["daily", "monthly"]),
          metric: z.enum(["tokens", "cost_usd"]),
          used: z.number().openapi({ description: "Charged this period." }),
          limit: z.number(),
        }),
      )
      .openapi({ description: "The budgets with nothing left (empty unless `exhausted`)." }),
    retry_after_seconds: z.number().int().nullable(),
  })
  .openapi("BudgetStatus");

const getRoute = createRoute({
  method: "get",
  path: "/api/v1/budgets",
  operationId: "getBudgets",
  tags: ["LLM"],
  summary: "Read budgets and current use",
  description: "Budgets (null = none) and this UTC day's and month's tokens and cost, counted by the router.",
  middleware: [requireScope("tasks:read")] as const,
  responses: {
    200: { description: "Budgets and use.", content: { "application/json": { schema: BudgetStatusSchema } } },
    ...API_PROBLEMS,
    ...problemResponses("NOT_FOUND"),
  },
});

const putRoute = createRoute({
  method: "put",
  path: "/api/v1/budgets",
  operationId: "putBudgets",
  tags: ["LLM"],
  summary: "Set budgets",
  description:
    "Replaces all four budgets (null = none). Thresholds at 50, 80 and 100% are reported once per period as `billing.threshold.reached` and `billing.usage_alert`; those the period's use already reaches under the new budgets are reported by this call, and those it no longer reaches (a raised budget) are armed again.",
  "x-audit-action": "budget.update",
  middleware: [requireScope("admin")] as const,
  request: { body: { required: true, content: { "application/json": { schema: BudgetsSchema.strict() } } } },
  responses: {
    200: { description: "Budgets and use.", content: { "application/json": { schema: BudgetStatusSchema } } },
    ...API_PROBLEMS,
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

/**
 * The limiter's answer, or a retryable 503 saying what did and did not happen: the budgets live in D1, their use
 * and thresholds in the WorkspaceLimiter, and a limiter that fails (overloaded, being reset) is no 500 of ours.
 */
async function fromLimiter<T>(c: Context<HonoEnv>, answer: Promise<T>, unavailable: string): Promise<T> {
  try {
    return await answer;
  } catch (error) {
    if (error instanceof ApiError) throw error;
    c.get("logger").error("budget limiter unavailable", { error });
    throw new ApiError("DEPENDENCY_UNAVAILABLE", unavailable, { headers: { "Retry-After": "1" } });
  }
}

export function registerBudgetRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(getRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const row = await findWorkspace(db, workspaceId);
    if (!row) throw new ApiError("NOT_FOUND", "Your workspace no longer exists.");
    const status = fromLimiter(
      c,
      budgetStatus(c.get("config"), workspaceId, row.budgets),
      "The budgets' use is unavailable for the moment (the workspace's limiter did not answer); retry shortly.",
    );
    return c.json(await status, 200);
  });

  app.openapi(putRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const row = await findWorkspace(db, workspaceId);
    if (!row) throw new ApiError("NOT_FOUND", "Your workspace no longer exists.");
    const budgets = c.req.valid("json");
    await db.batch([
      db.update(workspaces).set({ budgets, updatedAt: new Date().toISOString() }).where(eq(workspaces.id, workspaceId)),
      auditInsert(db, {
        ...auditContext(c),
        workspaceId,
        action: "budget.update",
        resourceType: "workspace",
        resourceId: workspaceId,
        changes: { before: row.budgets, after: budgets },
      }),
    ]);
    forgetWorkspaceSettings(workspaceId);
    const justSetBy = { workspaceId, correlationId: c.get("trace")?.traceId, requestId: c.get("requestId") };
    const status = fromLimiter(
      c,
      budgetStatus(c.get("config"), workspaceId, budgets, justSetBy),
      "The budgets were saved, but the workspace's limiter did not answer, so the thresholds they reach were not yet reported or armed again. Repeat this PUT (it is idempotent) to finish.",
    );
    return c.json(await status, 200);
  });
}
