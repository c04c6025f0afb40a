import type { WorkspaceBudgets } from "../db/schema.ts";
import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import { withWriteRetries } from "../lib/retry-write.ts";
import type { BudgetEventContext } from "../limits/budget-events.ts";
import { periodEndMs, reaches } from "../limits/budget-rules.ts";
import type { PeriodStatus, UnbudgetedCharge } from "../limits/budget-types.ts";
import { type Keep, type Lease, type LeaseBatchItem, LeaseBook, LeaseHold } from "./budget-leases.ts";
import { Coalescer } from "./coalesce.ts";
import { BudgetExhaustedError } from "./errors.ts";
import { type BudgetAmounts, type BudgetGate, hasAnyBudget, type Reservation } from "./router.ts";
import { type CallContext, LlmError } from "./types.ts";

/**
 * The isolate's side of budgets: reservations and settlements go to the
 * workspace's WorkspaceLimiter, with each call's event context, so that the
 * thresholds a settlement crosses are published by the limiter itself
 * (`billing.threshold.reached` and `billing.usage_alert`, from its outbox:
 * src/limits/budget-events.ts), not lost with this isolate. A workspace
 * without budgets skips the reservation (nothing can run out) but its usage
 * is still counted, so budgets set later start from the real figures.
 */

type Config = Pick<AppConfig, "WORKSPACE_LIMITER">;

/** A reservation the gate keeps no record of (made at the limiter, or none needed). */
const UNHELD: Reservation = Object.freeze({ hold: undefined });

export function budgetGate(
  config: Config,
  logger: Logger,
  waitUntil?: (promise: Promise<unknown>) => void,
): BudgetGate {
  const leases = leaseBookFor(config);
  const keep: Keep = waitUntil ?? ((work) => void work.catch(() => {}));
  const writeLeased = (lease: Lease, items: LeaseBatchItem[], batchKey: string) =>
    writeLeaseBatch(config, lease, items, batchKey);
  /** The next lease, asked for in the background while calls still spend the current one. */
  const renewLease = async (amounts: BudgetAmounts, budgets: WorkspaceBudgets) => {
    try {
      const grant = await config.WORKSPACE_LIMITER.getByName(amounts.workspaceId).lendBudget({
        limits: budgets,
        tokens: amounts.tokens,
        costUsd: amounts.costUsd,
        leaseKey: `lease:${crypto.randomUUID()}`,
        leaseCalls: leases.leaseCallsFor(amounts.workspaceId),
      });
      if (grant) leases.install(grant, amounts.workspaceId, budgets, writeLeased, keep);
    } catch (error) {
      // Calls go on with the current lease, then reserve by themselves.
      logger.warn("budget lease renewal failed", { error, workspace_id: amounts.workspaceId });
    } finally {
      leases.doneAsking(amounts.workspaceId);
    }
  };
  /**
   * Releases a reservation whose answer was lost. Settling a key the counter never took counts nothing, and a
   * reservation that reaches it after that finds the key settled and holds nothing (BudgetBook.reserve).
   */
  const giveBackLost = async (amounts: BudgetAmounts, context: CallContext) => {
    try {
      await withWriteRetries(() =>
        config.WORKSPACE_LIMITER.getByName(amounts.workspaceId).settleBudget({
          chargeKey: amounts.chargeKey,
          limits: amounts.budgets,
          tokens: 0,
          costUsd: 0,
          events: eventContext(context),
        }),
      );
    } catch (error) {
      logger.warn("a reservation whose answer was lost is held until it lapses", {
        error,
        workspace_id: amounts.workspaceId,
        charge_key: amounts.chargeKey,
      });
    }
  };
  return {
    async reserve(amounts, context) {
      const budgets = amounts.budgets;
      if (!budgets || !hasAnyBudget(budgets)) return UNHELD;
      const leased = leases.take(amounts.workspaceId, budgets, amounts, keep);
      if (leased) {
        if (!amounts.beside && leases.startAsking(amounts.workspaceId, "renew")) keep(renewLease(amounts, budgets));
        return { hold: leased };
      }
      const asks = !amounts.beside && leases.startAsking(amounts.workspaceId, "reserve");
      let result: Awaited<ReturnType<ReturnType<Config["WORKSPACE_LIMITER"]["getByName"]>["reserveBudget"]>>;
      try {
        result = await config.WORKSPACE_LIMITER.getByName(amounts.workspaceId).reserveBudget({
          chargeKey: amounts.chargeKey,
          limits: budgets,
          tokens: amounts.tokens,
          costUsd: amounts.costUsd,
          events: eventContext(context),
          ...(amounts.ifCut ? { ifCut: amounts.ifCut } : {}),
          ...(asks
            ? { leaseKey: `lease:${crypto.randomUUID()}`, leaseCalls: leases.leaseCallsFor(amounts.workspaceId) }
            : {}),
        });
      } catch (error) {
        // Spending without a working counter could overrun a budget: refuse, but as something to retry. Its own
        // kind: told as all_providers_failed, the caller (and a task's run error) blamed providers never asked.
        logger.error("budget reservation failed", { error, workspace_id: amounts.workspaceId });
        // The counter may have taken the reservation, its answer lost on the way back (a Durable Object reset by a
        // deploy): it would hold that room from every call for RESERVATION_TTL_MS, 30 minutes. A hold beside a call
        // is given back as the call settles (coverUnfinished); the call's own reservation, which ends it, now.
        if (!amounts.beside) keep(giveBackLost(amounts, context));
        throw new LlmError("budget_unavailable", "the budget counter is unavailable; retry shortly", true);
      } finally {
        if (asks) leases.doneAsking(amounts.workspaceId);
      }
      if (!result.ok) {
        const retryAfterSeconds = Math.max(1, Math.ceil(result.retryAfterMs / 1000));
        throw new BudgetExhaustedError(
          result.held
            ? heldMessage(result, result.held, retryAfterSeconds)
            : exhaustedMessage(result, retryAfterSeconds),
          {
            retryAfterSeconds,
            period: result.period,
            metric: result.metric,
            held: result.held !== undefined,
            ...(result.held ? { reserved: result.held.reserved } : {}),
            ...(result.held && result.room ? { room: result.room } : {}),
          },
        );
      }
      if (result.lease) leases.install(result.lease, amounts.workspaceId, budgets, writeLeased, keep);
      return result.nearLimit ? { hold: undefined, nearLimit: result.nearLimit } : UNHELD;
    },

    async settle(amounts, context) {
      if (amounts.hold instanceof LeaseHold) {
        const charge = {
          chargeKey: amounts.chargeKey,
          tokens: amounts.tokens,
          costUsd: amounts.costUsd,
          once: amounts.once,
        };
        const { lease } = amounts.hold;
        // null: the budgets were removed meanwhile, so no threshold is judged (not the lease's old ones).
        const limits = amounts.limitsNow === undefined ? lease.budgets : amounts.limitsNow;
        const written = lease.settle(amounts.hold, charge, context, limits);
        if (!waitUntil) return void (await written);
        // The lease took the charge at once; only the batch's write is left (tried again when it fails), and
        // nothing waits on it: a batch still failing after its retries is logged here, once, by its opener.
        const failed = (error: unknown) =>
          logger.error("budget charges not counted", { error, workspace_id: lease.workspaceId, lease_key: lease.key });
        waitUntil(written.catch(failed));
        return;
      }
      const limited = amounts.budgets !== null && hasAnyBudget(amounts.budgets);
      // Releasing a reservation that was never made: nothing to do.
      if (!limited && amounts.tokens === 0 && amounts.costUsd === 0) return;
      // Without budgets nothing was reserved, nothing waits on the counters and no threshold can be crossed:
      // charges share one call and are only counted.
      if (!limited) {
        return unbudgetedCounter(config, amounts.workspaceId).add({
          chargeKey: amounts.chargeKey,
          tokens: amounts.tokens,
          costUsd: amounts.costUsd,
          once: amounts.once,
        });
      }
      // Settling a key twice counts it once, so a settlement whose answer was lost can be tried again.
      await withWriteRetries(() =>
        config.WORKSPACE_LIMITER.getByName(amounts.workspaceId).settleBudget({
          chargeKey: amounts.chargeKey,
          limits: amounts.limitsNow === undefined ? amounts.budgets : amounts.limitsNow,
          tokens: amounts.tokens,
          costUsd: amounts.costUsd,
          events: eventContext(context),
        }),
      );
    },
  };
}

/**
 * Charges of workspaces without budgets written within this long share one
 * WorkspaceLimiter call: nothing waits on them (no budget can run out), so
 * fewer, larger calls cost the isolate less per charge (the cost is per call,
 * as for usage rows: see USAGE_FLUSH_DELAY_MS in usage.ts). GET /api/v1/budgets shows them
 * within about this long.
 */
const SETTLE_FLUSH_DELAY_MS = 250;
const SETTLE_MAX_PER_CALL = 100;
const MAX_SETTLERS = 1_000;
const settlers = new WeakMap<object, Map<string, Coalescer<UnbudgetedCharge>>>();

function unbudgetedCounter(config: Config, workspaceId: string): Coalescer<UnbudgetedCharge> {
  let byWorkspace = settlers.get(config.WORKSPACE_LIMITER);
  if (!byWorkspace) {
    byWorkspace = new Map();
    settlers.set(config.WORKSPACE_LIMITER, byWorkspace);
  }
  let settler = byWorkspace.get(workspaceId);
  if (!settler) {
    // Dropping the map loses nothing: a batch in flight holds its own items.
    if (byWorkspace.size >= MAX_SETTLERS) byWorkspace.clear();
    settler = new Coalescer<UnbudgetedCharge>(
      async (amounts, batchKey) => {
        await config.WORKSPACE_LIMITER.getByName(workspaceId).countUnbudgeted(amounts, batchKey);
      },
      { delayMs: SETTLE_FLUSH_DELAY_MS, maxItems: SETTLE_MAX_PER_CALL },
    );
    byWorkspace.set(workspaceId, settler);
  }
  return settler;
}

const leaseBooks = new WeakMap<object, LeaseBook>();

function leaseBookFor(config: Config): LeaseBook {
  let book = leaseBooks.get(config.WORKSPACE_LIMITER);
  if (!book) {
    book = new LeaseBook();
    leaseBooks.set(config.WORKSPACE_LIMITER, book);
  }
  return book;
}

/**
 * One limiter call for a lease's batch of charges (and its close); thresholds crossed are judged against the
 * budgets in force as its last call ended, and announced with that call's context.
 */
async function writeLeaseBatch(config: Config, lease: Lease, items: LeaseBatchItem[], batchKey: string): Promise<void> {
  const charged = items.flatMap((item) => ("charge" in item ? [item] : []));
  const last = charged.at(-1);
  await config.WORKSPACE_LIMITER.getByName(lease.workspaceId).settleLeasedBudget({
    leaseKey: lease.key,
    batchKey,
    limits: last ? last.limits : lease.budgets,
    charges: charged.map((item) => item.charge),
    close: items.some((item) => "close" in item),
    ...keptIn(items),
    events: last ? eventContext(last.context) : { workspaceId: lease.workspaceId },
  });
}

/** What a retired lease's calls in flight still hold (LeaseBatchItem), if the batch says. */
function keptIn(items: LeaseBatchItem[]): { keep?: { tokens: number; costUsd: number } } {
  for (const item of items) if ("keep" in item) return { keep: item.keep };
  return {};
}

/** The envelope of the events a call's charge may cause: its workspace, task, run, agent and trace. */
function eventContext(context: CallContext): BudgetEventContext {
  return {
    workspaceId: context.workspaceId,
    ...(context.taskId ? { taskId: context.taskId } : {}),
    ...(context.runId ? { runId: context.runId } : {}),
    ...(context.agentId ? { agentId: context.agentId } : {}),
    ...(context.correlationId ? { correlationId: context.correlationId } : {}),
    ...(context.requestId ? { requestId: context.requestId } : {}),
  };
}

export interface BudgetStatus {
  budgets: WorkspaceBudgets;
  daily: PeriodStatus;
  monthly: PeriodStatus;
  /** True when some budget has nothing left: new work would be refused. */
  exhausted: boolean;
  /** Which budgets have nothing left (use counts what running calls hold). */
  exhausted_by: ExhaustedBudget[];
  /** With `exhausted`: seconds until the exhausted period resets. */
  retry_after_seconds: number | null;
}

export const NO_BUDGETS: WorkspaceBudgets = {
  daily_tokens: null,
  monthly_tokens: null,
  daily_cost_usd: null,
  monthly_cost_usd: null,
};

export interface ExhaustedBudget {
  period: "daily" | "monthly";
  metric: "tokens" | "cost_usd";
  used: number;
  limit: number;
}

/** One wording for a spent budget, whether a call or a task submission meets it. */
export function exhaustedMessage(budget: ExhaustedBudget, retryAfterSeconds: number): string {
  const [what, unit] = budget.metric === "tokens" ? ["token", "tokens"] : ["cost", "USD"];
  return `The ${budget.period} ${what} budget is exhausted (${budget.used} of ${budget.limit} ${unit} used); it resets in ${retryAfterSeconds} s, or raise it with PUT /api/v1/budgets.`;
}

/** A budget not spent, whose room left calls in flight hold: they settle soon, and give back what they did not spend. */
function heldMessage(
  budget: ExhaustedBudget,
  held: { spent: number; reserved: number },
  retryAfterSeconds: number,
): string {
  const [what, unit] = budget.metric === "tokens" ? ["token", "tokens"] : ["cost", "USD"];
  // Leases too: the last one's unused room goes back with its final batch, up to a quarter second after its calls
  // end, so "calls in flight" alone read wrong to a caller who had none.
  return `The ${budget.period} ${what} budget's room left is held by calls in flight or leases not yet given back (${held.spent} of ${budget.limit} ${unit} spent, ${held.reserved} reserved); retry in ${retryAfterSeconds} s.`;
}

/**
 * Where a workspace stands against its budgets: for GET /api/v1/budgets, and
 * for task submission, which answers 429 when nothing is left. With
 * `justSetBy` (PUT /api/v1/budgets), the thresholds the period's use already
 * reaches under these budgets are reported first, with that envelope (and
 * those it no longer reaches armed again); with `untoldTo` (task submission),
 * those it reaches that no charge reported, so a budget spent by calls
 * counted before it was set is not refused without a word.
 */
export async function budgetStatus(
  config: Pick<AppConfig, "WORKSPACE_LIMITER">,
  workspaceId: string,
  budgets: WorkspaceBudgets | null,
  justSetBy?: BudgetEventContext,
  untoldTo?: BudgetEventContext,
): Promise<BudgetStatus> {
  const limits = budgets ?? NO_BUDGETS;
  const limiter = config.WORKSPACE_LIMITER.getByName(workspaceId);
  const status = justSetBy
    ? await limiter.reviewBudgets(limits, justSetBy)
    : await limiter.budgetStatus(untoldTo ? limits : undefined, untoldTo);
  const nowMs = Date.now();
  // A budget is exhausted when what is charged reaches it. What running calls hold is not spent: it comes
  // back as they settle (a call reserves the most it may spend), and a call refused meanwhile is told to
  // retry in seconds (budget_held), so a task submitted then is queued, not refused until the period ends.
  const checks = (["daily", "monthly"] as const).flatMap((period) => {
    const counted = status[period];
    const used = { tokens: counted.tokens, cost_usd: round(counted.cost_usd) };
    return (["tokens", "cost_usd"] as const).map((metric) => ({
      period,
      metric,
      used: used[metric],
      limit: limits[`${period}_${metric}`],
    }));
  });
  const exhausted: ExhaustedBudget[] = [];
  for (const check of checks) {
    // As the limiter refuses a call (refusalOf): spent when no room is left, to 1e-8.
    if (check.limit !== null && reaches(check.used, check.limit)) exhausted.push({ ...check, limit: check.limit });
  }
  const retryAfterSeconds =
    exhausted.length === 0
      ? null
      : Math.max(...exhausted.map((check) => Math.ceil((periodEndMs(check.period, nowMs) - nowMs) / 1000)));
  return {
    budgets: limits,
    daily: status.daily,
    monthly: status.monthly,
    exhausted: exhausted.length > 0,
    exhausted_by: exhausted,
    retry_after_seconds: retryAfterSeconds,
  };
}

/** Sums of rounded dollar amounts, rounded again (0.1 + 0.2 is not 0.3). */
function round(usd: number): number {
  return Math.round(usd * 1e8) / 1e8;
}
