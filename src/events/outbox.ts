import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import type { EventEnvelope } from "./catalog.ts";

/**
 * A transactional outbox for events a Durable Object decides on: the event
 * is written to the object's own SQLite in the same transaction as the state
 * change it reports, and delivered to the workspace's EventHub afterwards
 * (from the object's alarm), again until the hub has it. So an event cannot
 * be lost between deciding and publishing: not when the hub is down, not
 * when the isolate that asked for the change dies before it could publish.
 * The hub writes an event_id once, so a delivery whose answer was lost and is
 * sent again lands once.
 */

/** Waits before each retry of a failed delivery, by attempt; the last repeats. */
export const OUTBOX_RETRY_DELAYS_MS: readonly number[] = [1_000, 5_000, 30_000, 120_000, 300_000];
/** An event still undelivered this long after it was decided is dropped and logged: the hub has refused it all day. */
export const OUTBOX_GIVE_UP_MS = 24 * 3_600_000;
/** Events sent per delivery; more wait for the next alarm, at once. */
const DELIVERY_BATCH = 100;

/** The outbox's table, under the name its owner gives it (its own namespace, e.g. `limiter_event_outbox`). */
export function outboxMigration(table: string): string[] {
  return [
    `CREATE TABLE ${table} (
       seq INTEGER PRIMARY KEY AUTOINCREMENT,
       event_id TEXT NOT NULL UNIQUE,
       workspace_id TEXT NOT NULL,
       event TEXT NOT NULL,
       attempts INTEGER NOT NULL DEFAULT 0,
       due_at_ms INTEGER NOT NULL,
       created_at_ms INTEGER NOT NULL
     )`,
    `CREATE INDEX ${table}_due_at ON ${table} (due_at_ms)`,
  ];
}

export interface DeliveryReport {
  sent: number;
  /** Refused by the hub this time; tried again later. */
  retrying: number;
  /** Given up after OUTBOX_GIVE_UP_MS. */
  dropped: number;
}

type OutboxRow = {
  seq: number;
  event_id: string;
  workspace_id: string;
  event: string;
  attempts: number;
  created_at_ms: number;
};

export class EventOutbox {
  readonly #sql: SqlStorage;
  readonly #table: string;

  constructor(sql: SqlStorage, table: string) {
    this.#sql = sql;
    this.#table = table;
  }

  /**
   * Queues stamped events. Call it inside the transaction that decided them.
   * They are due at once, unless their workspace's earlier events wait for a
   * retry: a workspace's events are delivered in the order they were decided,
   * so new ones wait with them.
   */
  add(events: readonly EventEnvelope[], nowMs: number): void {
    for (const event of events) {
      this.#sql.exec(
        `INSERT INTO ${this.#table} (event_id, workspace_id, event, due_at_ms, created_at_ms)
         VALUES (?, ?, ?, COALESCE((SELECT MAX(due_at_ms) FROM ${this.#table} WHERE workspace_id = ?), ?), ?)
         ON CONFLICT (event_id) DO NOTHING`,
        event.event_id,
        event.workspace_id,
        JSON.stringify(event),
        event.workspace_id,
        nowMs,
        nowMs,
      );
    }
  }

  /** When the next delivery is due (epoch ms), or null when nothing waits. */
  nextDueMs(): number | null {
    return this.#sql.exec<{ due: number | null }>(`SELECT MIN(due_at_ms) AS due FROM ${this.#table}`).one().due;
  }

  /** Events waiting, oldest first (for status and tests). */
  pending(): { event: EventEnvelope; attempts: number; dueAtMs: number }[] {
    return this.#sql
      .exec<{ event: string; attempts: number; due_at_ms: number }>(
        `SELECT event, attempts, due_at_ms FROM ${this.#table} ORDER BY seq`,
      )
      .toArray()
      .map((row) => ({
        event: JSON.parse(row.event) as EventEnvelope,
        attempts: row.attempts,
        dueAtMs: row.due_at_ms,
      }));
  }

  /**
   * Sends the events due at `nowMs` to their workspaces' hubs, in the order
   * they were decided, one call per workspace. What the hub took is deleted.
   * When a hub refuses, all of that workspace's events wait for the next
   * retry (so they stay in order), and any older than OUTBOX_GIVE_UP_MS are
   * dropped and logged. Never throws.
   */
  async deliver(config: Pick<AppConfig, "EVENT_HUB">, nowMs: number, logger: Logger): Promise<DeliveryReport> {
    const due = this.#sql
      .exec<OutboxRow>(
        `SELECT seq, event_id, workspace_id, event, attempts, created_at_ms FROM ${this.#table}
         WHERE due_at_ms <= ? ORDER BY seq LIMIT ?`,
        nowMs,
        DELIVERY_BATCH,
      )
      .toArray();
    const byWorkspace = new Map<string, OutboxRow[]>();
    for (const row of due) byWorkspace.set(row.workspace_id, [...(byWorkspace.get(row.workspace_id) ?? []), row]);
    const report: DeliveryReport = { sent: 0, retrying: 0, dropped: 0 };
    await Promise.all(
      [...byWorkspace].map(async ([workspaceId, rows]) => {
        try {
          const events = rows.map((row) => JSON.parse(row.event) as EventEnvelope);
          await config.EVENT_HUB.getByName(workspaceId).publishMany(events);
          this.#delete(rows);
          report.sent += rows.length;
        } catch (error) {
          const expired = rows.filter((row) => nowMs - row.created_at_ms >= OUTBOX_GIVE_UP_MS);
          if (expired.length > 0) {
            logger.error("events dropped: the event hub refused them for a day", {
              error,
              workspace_id: workspaceId,
              event_ids: expired.map((row) => row.event_id),
            });
            this.#delete(expired);
            report.dropped += expired.length;
          }
          const retrying = rows.length - expired.length;
          if (retrying === 0) return;
          const attempts = rows[0].attempts;
          const delayMs = OUTBOX_RETRY_DELAYS_MS[Math.min(attempts, OUTBOX_RETRY_DELAYS_MS.length - 1)];
          this.#sql.exec(
            `UPDATE ${this.#table} SET attempts = attempts + 1 WHERE seq IN (${rows.map((row) => row.seq).join(",")})`,
          );
          this.#sql.exec(
            `UPDATE ${this.#table} SET due_at_ms = ? WHERE workspace_id = ?`,
            nowMs + delayMs,
            workspaceId,
          );
          logger.warn("event delivery failed; retrying", {
            error,
            workspace_id: workspaceId,
            events: retrying,
            retry_in_ms: delayMs,
          });
          report.retrying += retrying;
        }
      }),
    );
    return report;
  }

  #delete(rows: readonly OutboxRow[]): void {
    for (const row of rows) this.#sql.exec(`DELETE FROM ${this.#table} WHERE seq = ?`, row.seq);
  }
}
