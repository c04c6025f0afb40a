import { DurableObject } from "cloudflare:workers";
import { createDb } from "../src/db/client.ts";
import type { AppConfig } from "../src/env.ts";
import { EventOutbox } from "../src/events/outbox.ts";
import { Logger } from "../src/lib/logger.ts";
import {
  type AdmissionSnapshot,
  type Depth,
  type Dispatch,
  type SubmitInput,
  type SubmitResult,
  TaskAdmission,
} from "../src/limits/admission.ts";
import { type AuditAnchor, AuditAnchorStore } from "../src/limits/audit-anchor-store.ts";
import { type BudgetEventContext, stampedThresholdEvents } from "../src/limits/budget-events.ts";
import type {
  BudgetAmountsInput,
  BudgetLease,
  BudgetLimits,
  LeasedSettleInput,
  LeaseRequest,
  PeriodStatus,
  ReserveInput,
  ReserveResult,
  SettleInput,
  SettleResult,
  ThresholdCrossing,
  UnbudgetedCharge,
} from "../src/limits/budget-types.ts";
import { BudgetBook } from "../src/limits/budgets.ts";
import { LimiterCore } from "../src/limits/limiter-core.ts";
import { LIMITER_EVENT_OUTBOX } from "../src/limits/limiter-store.ts";
import type {
  AcquireInput,
  AcquireResult,
  BucketSnapshot,
  ReleaseInput,
  StrikeInput,
  StrikeResult,
} from "../src/limits/types.ts";
import { sendDispatches } from "../src/tasks/dispatch.ts";
import { parseTaskMessage } from "../src/tasks/messages.ts";

/**
 * One per workspace (addressed by workspace id): its token buckets and client
 * strikes, its task admission (running slots as leases, the pending line by
 * priority then age; src/limits/admission.ts), token budgets, and the audit
 * chain's anchor outside D1. A thin RPC shell over LimiterCore,
 * TaskAdmission, BudgetBook, AuditAnchorStore and EventOutbox, which the
 * tests drive directly. State lives in this object's SQLite storage.
 *
 * Budget thresholds are published from here, not by the caller: their events
 * are queued in the transaction that crossed them, and the alarm delivers
 * them to the workspace's EventHub until it has them (src/events/outbox.ts).
 *
 * Buckets run on the object's own clock, never the caller's: isolates on
 * other machines may be skewed, and a clock running ahead would refill a bucket
 * early. Strikes may take the caller's `nowMs` (their windows are long enough
 * that skew does not matter, and tests can step through a cool-down).
 */
export class WorkspaceLimiter extends DurableObject {
  readonly #core: LimiterCore;
  readonly #admission: TaskAdmission;
  readonly #budgets: BudgetBook;
  readonly #auditAnchor: AuditAnchorStore;
  readonly #outbox: EventOutbox;
  readonly #logger = new Logger({ level: "info", sampleRate: 1 }, { object: "WorkspaceLimiter" });
  /** The alarm this object last set (epoch ms), so calls do not reset it needlessly. */
  #alarmAtMs: number | null = null;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    // LimiterCore runs the schema migrations, so it is built first.
    this.#core = new LimiterCore(ctx.storage);
    this.#admission = new TaskAdmission(ctx.storage);
    this.#outbox = new EventOutbox(ctx.storage.sql, LIMITER_EVENT_OUTBOX);
    this.#budgets = new BudgetBook(ctx.storage, {
      onCrossings: (crossings, context, nowMs) =>
        this.#outbox.add(stampedThresholdEvents(crossings, context, this.#logger), nowMs),
    });
    this.#auditAnchor = new AuditAnchorStore(ctx.storage);
  }

  /** The audit chain's anchor outside D1 (src/limits/audit-anchor-store.ts). */
  async auditAnchor(): Promise<AuditAnchor | null> {
    return this.#auditAnchor.get();
  }

  /** Moves the audit anchor to a later sealed entry; never back. */
  async advanceAuditAnchor(seq: number, hash: string): Promise<AuditAnchor> {
    return this.#auditAnchor.advance(seq, hash, Date.now());
  }

  /**
   * Budgets: reserve a call's estimate; refused when a daily or monthly budget has nothing left.
   * With `leaseKey`, may also lend the isolate budget for its next calls.
   */
  async reserveBudget(input: ReserveInput): Promise<ReserveResult> {
    const result = this.#budgets.reserve({ ...input, nowMs: Date.now() });
    // A refusal for a spent budget may have reported thresholds no charge had (BudgetBook.reserve).
    if (!result.ok && !result.held) await this.#scheduleAlarm();
    return result;
  }

  /** Budgets: charge the actual amounts once per charge key; reports thresholds newly reached (and publishes them). */
  async settleBudget(input: SettleInput): Promise<SettleResult> {
    const result = this.#budgets.settle({ ...input, nowMs: Date.now() });
    if (result.crossings.length > 0) await this.#scheduleAlarm();
    return result;
  }

  /** Budgets: a lease alone, sized for calls of the given estimate; null near a limit. */
  async lendBudget(input: Omit<BudgetAmountsInput, "chargeKey"> & LeaseRequest): Promise<BudgetLease | null> {
    return this.#budgets.lend({ ...input, nowMs: Date.now() });
  }

  /** Budgets: calls charged against a lease, in one call; reports thresholds newly reached (and publishes them). */
  async settleLeasedBudget(input: LeasedSettleInput): Promise<{ crossings: ThresholdCrossing[] }> {
    const result = this.#budgets.settleLeased({ ...input, nowMs: Date.now() });
    if (result.crossings.length > 0) await this.#scheduleAlarm();
    return result;
  }

  /** Calls of a workspace without budgets, counted in one call (isolates coalesce them; no reservation was made). */
  async countUnbudgeted(charges: UnbudgetedCharge[], batchKey?: string): Promise<void> {
    this.#budgets.countUnbudgeted(charges, Date.now(), batchKey);
  }

  /** Budgets just set: reports (and publishes) the thresholds the period's use reaches under them; answers the status. */
  async reviewBudgets(
    limits: BudgetLimits | null,
    events: BudgetEventContext,
  ): Promise<{ daily: PeriodStatus; monthly: PeriodStatus }> {
    const result = this.#budgets.review({ limits, events, nowMs: Date.now() });
    if (result.crossings.length > 0) await this.#scheduleAlarm();
    return result.status;
  }

  /**
   * Where the budgets stand. Given the workspace's budgets and an envelope (a task submission), thresholds
   * its use reaches that no charge reported are reported (and published) first (BudgetBook.reportReached).
   */
  async budgetStatus(
    limits?: BudgetLimits | null,
    events?: BudgetEventContext,
  ): Promise<{ daily: PeriodStatus; monthly: PeriodStatus }> {
    const nowMs = Date.now();
    if (limits && events && this.#budgets.reportReached({ limits, events, nowMs }).length > 0) {
      await this.#scheduleAlarm();
    }
    return this.#budgets.status(nowMs);
  }

  /** Admission of a new task: a slot now (the caller sends `dispatch`), a place in line, or a refusal. */
  async submitTask(input: SubmitInput): Promise<SubmitResult> {
    const result = this.#admission.submit({ ...input, nowMs: Date.now() });
    await this.#scheduleAlarm();
    return result;
  }

  /** The workspace's task caps changed; the caller sends the pending tasks a raised cap releases. */
  async setTaskCaps(maxRunning: number, maxPending: number): Promise<{ dispatch: Dispatch[]; depth: Depth }> {
    const result = this.#admission.setCaps({ maxRunning, maxPending, nowMs: Date.now() });
    await this.#scheduleAlarm();
    return result;
  }

  /** Ended tasks give back their slots; the caller sends the pending tasks released into them. */
  async finishTasks(taskIds: string[]): Promise<{ dispatch: Dispatch[]; released: number; depth: Depth }> {
    const result = this.#admission.finish({ taskIds, nowMs: Date.now() });
    await this.#scheduleAlarm();
    return result;
  }

  /** A consumer keeps these slots for `leaseMs` more (a task started, or its retry is scheduled). */
  async renewTasks(taskIds: string[], leaseMs: number): Promise<{ renewed: string[] }> {
    const result = this.#admission.renew({ taskIds, leaseMs, nowMs: Date.now() });
    await this.#scheduleAlarm();
    return result;
  }

  async admissionSnapshot(): Promise<AdmissionSnapshot> {
    return this.#admission.snapshot();
  }

  /** Queued events delivered; lapsed leases sent again to the task queue, or given up to the dead-letter queue. */
  override async alarm(): Promise<void> {
    this.#alarmAtMs = null;
    // Alongside the leases' work, not before it: a slow hub must not hold up tasks.
    const delivered = this.#outbox.deliver(
      this.env as unknown as Pick<AppConfig, "EVENT_HUB">,
      Date.now(),
      this.#logger,
    );
    const { redispatch, abandoned, dispatch } = this.#admission.expire({ nowMs: Date.now() });
    const env = this.env as Cloudflare.Env & { TASKS_QUEUE: Queue; TASKS_DLQ: Queue; DB: D1Database };
    if (redispatch.length > 0) await env.TASKS_QUEUE.sendBatch(redispatch.map((item) => ({ body: item.message })));
    // Released from the line into the slots given up: sent, and their rows marked `queued` as on every other path
    // (sent alone, they read `pending` until they started). A failed send is sent again when its lease lapses.
    const workspaceId = parseTaskMessage(dispatch[0]?.message)?.workspace_id;
    if (workspaceId) await sendDispatches(env, createDb(env.DB), workspaceId, dispatch, this.#logger);
    if (abandoned.length > 0) {
      await env.TASKS_DLQ.sendBatch(
        abandoned.map((item) => ({ body: { ...(item.message as object), reason: "lease_expired" } })),
      );
    }
    await delivered;
    await this.#scheduleAlarm();
  }

  /** One alarm serves both: the earlier of the next lease expiry and the next event delivery. */
  async #scheduleAlarm(): Promise<void> {
    const due = [this.#admission.nextExpiryMs(), this.#outbox.nextDueMs()].filter((ms) => ms !== null);
    if (due.length === 0) return;
    const nextMs = Math.min(...due);
    if (this.#alarmAtMs !== null && this.#alarmAtMs <= nextMs) return;
    this.#alarmAtMs = nextMs;
    await this.ctx.storage.setAlarm(nextMs);
  }

  async acquire(input: AcquireInput): Promise<AcquireResult> {
    return this.#core.acquire({ rules: input.rules, tokens: input.tokens, nowMs: Date.now() });
  }

  async release(input: ReleaseInput): Promise<{ buckets: BucketSnapshot[] }> {
    return this.#core.release({ rules: input.rules, tokens: input.tokens, nowMs: Date.now() });
  }

  async recordStrike(input: StrikeInput & { nowMs?: number }): Promise<StrikeResult> {
    const { key, threshold, windowMs, cooldownMs } = input;
    return this.#core.recordStrike({ key, threshold, windowMs, cooldownMs, nowMs: input.nowMs ?? Date.now() });
  }

  /** When `key`'s block ends (epoch ms), or null if it is not blocked at `nowMs` (default: now). */
  async blockedUntil(key: string, nowMs?: number): Promise<number | null> {
    return this.#core.blockedUntil(key, nowMs ?? Date.now());
  }

  async ping(): Promise<{ ok: true; object: "WorkspaceLimiter"; time: string }> {
    return { ok: true, object: "WorkspaceLimiter", time: new Date().toISOString() };
  }
}
