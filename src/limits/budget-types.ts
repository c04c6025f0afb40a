import type { BudgetEventContext } from "./budget-events.ts";

/**
 * The shapes a workspace's budgets are told and answer in (BudgetBook,
 * budgets.ts): limits, reservations, leases, settlements, threshold crossings.
 */

export interface BudgetLimits {
  daily_tokens: number | null;
  monthly_tokens: number | null;
  daily_cost_usd: number | null;
  monthly_cost_usd: number | null;
}

export interface BudgetAmountsInput {
  chargeKey: string;
  limits: BudgetLimits | null;
  tokens: number;
  costUsd: number;
  /**
   * The most the call spends once its answer is cut near a limit, where that is less than `tokens` and
   * `costUsd` (a call without max_tokens is cut to a few thousand tokens of answer): near a limit it
   * reserves this, or all the room where the room is less, and leaves the rest to calls alongside.
   */
  ifCut?: { tokens: number; costUsd: number };
}

/** A call's reservation; `events`: whose call it is, for the thresholds a refusal reports (see BudgetBook.reserve). */
export interface ReserveInput extends BudgetAmountsInput, Partial<LeaseRequest> {
  events?: BudgetEventContext;
}

/** What the budgets have left: the tightest of each kind, null for a kind without a budget. */
export interface BudgetRoom {
  tokens: number | null;
  costUsd: number | null;
  /** Which period's budget leaves that room, of each kind: what a call that cannot fit in it is told. */
  periods?: { tokens?: "daily" | "monthly"; costUsd?: "daily" | "monthly" };
  /**
   * What calls in flight and leases hold of that period's budget, of each kind: room that comes back as they
   * settle, so a call that cannot fit only for it may retry in seconds rather than wait for the period's reset.
   */
  reserved?: { tokens?: number; costUsd?: number };
}

export interface SettleInput extends BudgetAmountsInput {
  /** Whose charge this is: thresholds it crosses are announced as events with this envelope. */
  events?: BudgetEventContext;
}

/** A call of a workspace without budgets; `once`: its key is settled once by construction (CallContext.chargeOnce). */
export interface UnbudgetedCharge {
  chargeKey: string;
  tokens: number;
  costUsd: number;
  once?: boolean;
}

/**
 * Budget lent to one isolate with a reservation, for its calls to spend
 * without a round trip each (src/llm/budget-leases.ts). Held here like a
 * reservation under its own key: the charges reported against it draw it
 * down, and what is left goes back when the isolate closes it, or at the
 * sweep after LEASE_HOLD_MS (budgets.ts) if the isolate is gone.
 */
export interface BudgetLease {
  key: string;
  /** Null: the workspace has no budget of that kind, so the lease does not limit it. */
  tokens: number | null;
  costUsd: number | null;
}

/** A call charged against a lease; `once` as in UnbudgetedCharge. */
export interface LeasedCharge {
  chargeKey: string;
  tokens: number;
  costUsd: number;
  once?: boolean;
}

/** An isolate's request for a lease: its key, and how many calls like the one at hand it should cover. */
export interface LeaseRequest {
  leaseKey: string;
  leaseCalls?: number;
}

export interface LeasedSettleInput {
  leaseKey: string;
  limits: BudgetLimits | null;
  charges: LeasedCharge[];
  /** The isolate is done with the lease: what it still holds goes back. */
  close: boolean;
  /**
   * The isolate lends no more from the lease: it holds from now on only this, what its calls still running took
   * from it (they may run for minutes: a stream, a slow model), as long as a reservation is held
   * (RESERVATION_TTL_MS), not LEASE_HOLD_MS; the rest goes back at once. Ignored with `close`.
   */
  keep?: { tokens: number; costUsd: number };
  /** The same on each try of one batch (see Coalescer): a batch that landed before is not counted again. */
  batchKey?: string;
  /** As in SettleInput: the batch's last call. */
  events?: BudgetEventContext;
}

export type ReserveResult =
  | {
      ok: true;
      lease: BudgetLease | null;
      /**
       * Near a limit (the room left is less than the call asked to reserve, the most it may spend): the room,
       * which the call must fit its answer in. It reserved all of it, or its `ifCut` amounts where the room
       * holds them. Absent when the call got all it asked for.
       */
      nearLimit?: BudgetRoom;
    }
  | {
      ok: false;
      period: "daily" | "monthly";
      metric: "tokens" | "cost_usd";
      limit: number;
      /** Spent, when the budget is; else spent and reserved (see `held`). */
      used: number;
      /**
       * The budget is not spent: what is left is held by calls in flight (a call near the limit holds all of
       * it) and leases, and comes back as they settle. Worth a retry in seconds, not at the period's end.
       */
      held?: { spent: number; reserved: number };
      /**
       * With `held`: the room left of each kind and what calls in flight and leases hold of it (BudgetRoom.reserved),
       * of the kind not named too. Both budgets may be all held while the one named first is not what a call lacks.
       */
      room?: BudgetRoom;
      /** Until the period resets; when `held`, until a retry may find room. */
      retryAfterMs: number;
    };

export interface ThresholdCrossing {
  period: "daily" | "monthly";
  metric: "tokens" | "cost_usd";
  /** 50, 80 or 100. */
  thresholdPercent: number;
  limit: number;
  used: number;
  percentage: number;
}

export interface SettleResult {
  /** The charge key was settled before: nothing changed. */
  duplicate: boolean;
  crossings: ThresholdCrossing[];
}

export interface PeriodStatus {
  period: string;
  tokens: number;
  cost_usd: number;
  reserved_tokens: number;
  reserved_cost_usd: number;
  resets_at: string;
  /** Thresholds reported this period (each once: `billing.threshold.reached`), in the order they were reached. */
  thresholds_reached: { metric: "tokens" | "cost_usd"; threshold_percent: number; reached_at: string }[];
}

/** Called inside the transaction that crossed the thresholds, so what it writes lands with the charge or not at all. */
export type OnCrossings = (crossings: ThresholdCrossing[], context: BudgetEventContext, nowMs: number) => void;
