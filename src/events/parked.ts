import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import type { EventEnvelope } from "./catalog.ts";

/**
 * Events kept when their workspace's EventHub cannot take them. publish() and
 * the EventBatcher try the hub for about 5 s (src/lib/retry-write.ts); past
 * that, an event is parked in D1 (`parked_events`) instead of being dropped,
 * and the every-minute cron delivers what is parked, each workspace's events in
 * the order they were parked. An event keeps its event_id and timestamp; its
 * seq is given when it lands, so it follows what the hub took in the
 * meantime. A task's own events keep their order all the same: the queue
 * consumer lands its workspaces' parked events before publishing a batch's
 * (a parked `task.created` before its `task.started`), and its EventBatcher
 * parks a workspace's later events behind any still refused, until a try of
 * those finds the hub back (src/events/batcher.ts). The hub writes
 * an event_id once, so a delivery whose answer was lost does not land twice.
 */

/** Past this, an event the hub still refuses is dropped and logged with its id: a hub down this long is an incident. */
export const PARKED_EVENT_GIVE_UP_DAYS = 7;
/** Rows one delivery page takes at most: a long outage drains over a few cron runs instead of one long one. */
const DELIVERY_MAX_ROWS = 1_000;
/** Pages one cron run takes at most (each after the workspaces refused so far). */
const DELIVERY_MAX_PAGES = 5;
/** D1 binds at most 100 parameters per statement; one is the UPDATE's reason. */
const IDS_PER_STATEMENT = 99;
const DAY_MS = 86_400_000;

/** What publish() throws once it has parked what the hub would not take: the events are kept, not sent yet. */
export class EventParkedError extends Error {
  readonly eventIds: string[];
  constructor(eventIds: string[], cause: unknown) {
    super(`the event hub did not take ${eventIds.length} event(s); parked for later delivery`, { cause });
    this.name = "EventParkedError";
    this.eventIds = eventIds;
  }
}

/**
 * Parks events the hub refused and answers the error to throw: EventParkedError
 * once they are kept, or the hub's own error when they cannot be (no D1 here,
 * or D1 failing too), for the caller to log as lost.
 */
export async function parkRefusedEvents(
  env: Partial<Pick<AppConfig, "DB">>,
  events: readonly EventEnvelope[],
  hubError: unknown,
  logger?: Logger,
): Promise<Error> {
  const original = hubError instanceof Error ? hubError : new Error(String(hubError));
  if (!env.DB || events.length === 0) return original;
  try {
    await parkEvents(env.DB, events, original.message);
  } catch (error) {
    logger?.error("events could not be parked", {
      error,
      hub_error: original.message,
      event_ids: events.map((event) => event.event_id),
    });
    return original;
  }
  return new EventParkedError(
    events.map((event) => event.event_id),
    hubError,
  );
}

/** How a producer logs an event publish() did not deliver: parked (kept, to land late) or lost. */
export function logUndelivered(logger: Logger, error: unknown, fields: Record<string, unknown>): void {
  if (error instanceof EventParkedError) {
    logger.warn("event parked for later delivery", { ...fields, event_ids: error.eventIds, error: error.cause });
  } else {
    logger.error("event not published", { ...fields, error });
  }
}

export async function parkEvents(
  db: D1Database,
  events: readonly EventEnvelope[],
  reason: string,
  nowMs = Date.now(),
): Promise<void> {
  const parkedAt = new Date(nowMs).toISOString();
  // An event parked twice (a retried batch) is kept once.
  const insert = db.prepare(
    "INSERT OR IGNORE INTO parked_events (event_id, workspace_id, event, parked_at, last_error) VALUES (?, ?, ?, ?, ?)",
  );
  await db.batch(
    events.map((event) => insert.bind(event.event_id, event.workspace_id, JSON.stringify(event), parkedAt, reason)),
  );
}

interface ParkedRow {
  id: number;
  event_id: string;
  workspace_id: string;
  event: string;
  parked_at: string;
}

export interface ParkedDelivery {
  delivered: number;
  /** Still refused: kept for the next run. */
  refused: number;
  /** Refused for PARKED_EVENT_GIVE_UP_DAYS: dropped, each id logged. */
  givenUp: number;
}

/**
 * Delivers the oldest parked events, one publishMany per workspace, and forgets those that landed. A full
 * page is followed by the next, without the workspaces refused so far (their later events stay behind
 * theirs): a hub that stays down holds back its own events, not every other workspace's.
 */
export async function deliverParkedEvents(
  config: Pick<AppConfig, "DB" | "EVENT_HUB">,
  logger: Logger,
  nowMs = Date.now(),
): Promise<ParkedDelivery> {
  const total: ParkedDelivery = { delivered: 0, refused: 0, givenUp: 0 };
  const refused = new Set<string>();
  let afterId = 0;
  for (let page = 0; page < DELIVERY_MAX_PAGES; page++) {
    const { results } = await config.DB.prepare(
      `SELECT id, event_id, workspace_id, event, parked_at FROM parked_events
       WHERE id > ?1 AND workspace_id NOT IN (SELECT value FROM json_each(?2)) ORDER BY id LIMIT ?3`,
    )
      .bind(afterId, JSON.stringify([...refused]), DELIVERY_MAX_ROWS)
      .all<ParkedRow>();
    if (results.length === 0) break;
    const delivery = await deliverRows(config, logger, results, nowMs);
    total.delivered += delivery.outcome.delivered;
    total.refused += delivery.outcome.refused;
    total.givenUp += delivery.outcome.givenUp;
    for (const workspaceId of delivery.refused) refused.add(workspaceId);
    afterId = results[results.length - 1].id;
    if (results.length < DELIVERY_MAX_ROWS) break;
  }
  if (afterId > 0) logger.info("parked events delivered", { ...total });
  return total;
}

/**
 * Delivers what these workspaces have parked, ahead of events about to be
 * published for them, and answers the workspaces that still have events
 * parked (refused again, or more than one delivery takes): their new events
 * must be parked behind, not sent past them. One indexed read when nothing
 * is parked, the usual case.
 */
export async function deliverParkedEventsOf(
  config: Pick<AppConfig, "DB" | "EVENT_HUB">,
  logger: Logger,
  workspaceIds: readonly string[],
): Promise<Set<string>> {
  if (workspaceIds.length === 0) return new Set();
  const { results } = await config.DB.prepare(
    `SELECT id, event_id, workspace_id, event, parked_at FROM parked_events
     WHERE workspace_id IN (SELECT value FROM json_each(?1)) ORDER BY id LIMIT ?2`,
  )
    .bind(JSON.stringify(workspaceIds), DELIVERY_MAX_ROWS)
    .all<ParkedRow>();
  if (results.length === 0) return new Set();
  const { outcome, refused } = await deliverRows(config, logger, results, Date.now());
  logger.info("parked events delivered ahead of new ones", { ...outcome });
  // A full page may have left older events of these workspaces parked.
  return results.length === DELIVERY_MAX_ROWS ? new Set(results.map((row) => row.workspace_id)) : refused;
}

/** After an EventBatcher parks events: tries of the workspace's parked events in the background, a second and then four apart. */
const REDELIVERY_DELAYS_MS: readonly number[] = [1_000, 4_000];

/**
 * Tries the workspace's parked events again over the next few seconds (for
 * a request's or a queue batch's waitUntil), so a hub back within seconds
 * gets them then rather than at the next cron run. Parking order holds: each
 * try delivers them all.
 */
export async function redeliverParkedSoon(
  config: Pick<AppConfig, "DB" | "EVENT_HUB">,
  logger: Logger,
  workspaceId: string,
): Promise<void> {
  for (const delayMs of REDELIVERY_DELAYS_MS) {
    await new Promise((wake) => setTimeout(wake, delayMs));
    try {
      if (!(await deliverParkedEventsOf(config, logger, [workspaceId])).has(workspaceId)) return;
    } catch (error) {
      logger.warn("parked events not redelivered", { error, workspace_id: workspaceId });
    }
  }
}

async function deliverRows(
  config: Pick<AppConfig, "DB" | "EVENT_HUB">,
  logger: Logger,
  rows: readonly ParkedRow[],
  nowMs: number,
): Promise<{ outcome: ParkedDelivery; refused: Set<string> }> {
  const byWorkspace = new Map<string, ParkedRow[]>();
  for (const row of rows) {
    const list = byWorkspace.get(row.workspace_id);
    if (list) list.push(row);
    else byWorkspace.set(row.workspace_id, [row]);
  }

  const outcome: ParkedDelivery = { delivered: 0, refused: 0, givenUp: 0 };
  const refused = new Set<string>();
  const giveUpBefore = new Date(nowMs - PARKED_EVENT_GIVE_UP_DAYS * DAY_MS).toISOString();
  await Promise.all(
    [...byWorkspace].map(async ([workspaceId, rows]) => {
      try {
        const events = rows.map((row) => JSON.parse(row.event) as EventEnvelope);
        await config.EVENT_HUB.getByName(workspaceId).publishMany(events);
      } catch (error) {
        const expired = rows.filter((row) => row.parked_at < giveUpBefore);
        const kept = rows.filter((row) => row.parked_at >= giveUpBefore);
        const reason = error instanceof Error ? error.message : String(error);
        await runForIds(config.DB, kept, (marks, ids) =>
          config.DB.prepare(
            `UPDATE parked_events SET attempts = attempts + 1, last_error = ? WHERE id IN (${marks})`,
          ).bind(reason, ...ids),
        );
        await forget(config.DB, expired);
        if (expired.length > 0) {
          logger.error("parked events given up: their hub refused them for days", {
            workspace_id: workspaceId,
            event_ids: expired.map((row) => row.event_id),
            error,
          });
        }
        if (kept.length > 0) refused.add(workspaceId);
        outcome.refused += kept.length;
        outcome.givenUp += expired.length;
        return;
      }
      await forget(config.DB, rows);
      outcome.delivered += rows.length;
    }),
  );
  return { outcome, refused };
}

function forget(db: D1Database, rows: readonly ParkedRow[]): Promise<void> {
  return runForIds(db, rows, (marks, ids) =>
    db.prepare(`DELETE FROM parked_events WHERE id IN (${marks})`).bind(...ids),
  );
}

/** Runs `statement` over the rows' ids, at most IDS_PER_STATEMENT at a time, in one batch. */
async function runForIds(
  db: D1Database,
  rows: readonly ParkedRow[],
  statement: (marks: string, ids: number[]) => D1PreparedStatement,
): Promise<void> {
  if (rows.length === 0) return;
  const statements: D1PreparedStatement[] = [];
  for (let start = 0; start < rows.length; start += IDS_PER_STATEMENT) {
    const ids = rows.slice(start, start + IDS_PER_STATEMENT).map((row) => row.id);
    statements.push(statement(ids.map(() => "?").join(", "), ids));
  }
  await db.batch(statements);
}
