import { insertJsonRowsSql } from "../db/json-rows.ts";

/**
 * The hub's storage: the workspace's event log (seq-numbered, in the Durable
 * Object's SQLite) and its pending WebSocket tickets. Tables are namespaced
 * `evh_` so nothing else in the object's database collides with them.
 */

export type LogRow = {
  seq: number;
  event_id: string;
  event_type: string;
  /** Comma-separated, e.g. `task:task_1,run:run_2`; empty when the event has none. */
  channels: string;
  created_at_ms: number;
  /** The event as JSON, `seq` included: replay sends it without re-serializing. */
  body: string;
};

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS evh_events (
     seq INTEGER PRIMARY KEY,
     event_id TEXT NOT NULL UNIQUE,
     event_type TEXT NOT NULL,
     channels TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL,
     body TEXT NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS evh_events_created ON evh_events (created_at_ms)",
  "CREATE TABLE IF NOT EXISTS evh_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
  `CREATE TABLE IF NOT EXISTS evh_tickets (
     ticket_hash TEXT PRIMARY KEY,
     holder TEXT NOT NULL,
     expires_at_ms INTEGER NOT NULL,
     key_id TEXT,
     credentials_expire_at_ms INTEGER
   )`,
  // API keys revoked lately: refused here for as long as another isolate may still take them (see revokeKey).
  `CREATE TABLE IF NOT EXISTS evh_revoked_keys (
     key_id TEXT PRIMARY KEY,
     until_ms INTEGER NOT NULL
   )`,
];

/**
 * Columns tickets gained after hubs were first made, which those hubs' tables lack: the API key a ticket was issued
 * to (null: a JWT's or the operator's), and when the credentials it was issued for expire (null: never).
 */
const LATER_TICKET_COLUMNS = ["key_id TEXT", "credentials_expire_at_ms INTEGER"];

/** Who holds a ticket, or a connection: a display name for logs, and the API key it stands for (null: none). */
export interface TicketHolder {
  display: string;
  keyId: string | null;
  /** When the credentials the ticket was issued for stop working (a key's `expires_at`, a JWT's `exp`); null: never. */
  expiresAtMs: number | null;
}

export interface AppendInput {
  eventId: string;
  eventType: string;
  channels: readonly string[];
  createdAtMs: number;
  bodyOf: (seq: number) => string;
}

const INSERT_EVENTS_SQL = insertJsonRowsSql("evh_events", [
  "seq",
  "event_id",
  "event_type",
  "channels",
  "created_at_ms",
  "body",
]);

export class EventLog {
  private readonly sql: SqlStorage;
  private last: number;

  constructor(sql: SqlStorage) {
    this.sql = sql;
    for (const statement of SCHEMA) sql.exec(statement);
    const ticketColumns = new Set(
      sql
        .exec<{ name: string }>("PRAGMA table_info(evh_tickets)")
        .toArray()
        .map((column) => column.name),
    );
    for (const column of LATER_TICKET_COLUMNS) {
      if (!ticketColumns.has(column.split(" ")[0])) sql.exec(`ALTER TABLE evh_tickets ADD COLUMN ${column}`);
    }
    // The high-water mark survives trimming every row, so seq never goes back.
    const stored = sql.exec<{ value: number }>("SELECT value FROM evh_meta WHERE key = 'last_seq'").toArray()[0];
    const max = sql.exec<{ seq: number | null }>("SELECT MAX(seq) AS seq FROM evh_events").one().seq;
    this.last = Math.max(stored?.value ?? 0, max ?? 0);
  }

  lastSeq(): number {
    return this.last;
  }

  /**
   * Appends events in order, each with the next seq; an `event_id` already in
   * the log (or earlier in the same call) is not written again and answers
   * with its row. Two statements however many events (a queue batch publishes
   * hundreds at once): the ids to look up and the rows to insert each travel
   * as one JSON parameter (src/db/json-rows.ts).
   */
  appendMany(entries: readonly AppendInput[]): { row: LogRow; duplicate: boolean }[] {
    if (entries.length === 0) return [];
    const known = new Map(
      this.sql
        .exec<LogRow>(
          "SELECT * FROM evh_events WHERE event_id IN (SELECT value FROM json_each(?))",
          JSON.stringify(entries.map((entry) => entry.eventId)),
        )
        .toArray()
        .map((row) => [row.event_id, row]),
    );
    const fresh: LogRow[] = [];
    const results = entries.map((entry) => {
      const existing = known.get(entry.eventId);
      if (existing) return { row: existing, duplicate: true };
      const seq = this.last + fresh.length + 1;
      const row: LogRow = {
        seq,
        event_id: entry.eventId,
        event_type: entry.eventType,
        channels: entry.channels.join(","),
        created_at_ms: entry.createdAtMs,
        body: entry.bodyOf(seq),
      };
      fresh.push(row);
      known.set(entry.eventId, row); // the same event twice in one call is written once
      return { row, duplicate: false };
    });
    if (fresh.length > 0) {
      this.sql.exec(
        INSERT_EVENTS_SQL,
        JSON.stringify(
          fresh.map((row) => [row.seq, row.event_id, row.event_type, row.channels, row.created_at_ms, row.body]),
        ),
      );
      this.last += fresh.length;
    }
    return results;
  }

  byEventId(eventId: string): LogRow | null {
    return this.sql.exec<LogRow>("SELECT * FROM evh_events WHERE event_id = ?", eventId).toArray()[0] ?? null;
  }

  /** Up to `limit` rows with seq > afterSeq, in seq order. */
  after(afterSeq: number, limit: number): LogRow[] {
    return this.sql
      .exec<LogRow>("SELECT * FROM evh_events WHERE seq > ? ORDER BY seq LIMIT ?", afterSeq, limit)
      .toArray();
  }

  count(): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM evh_events").one().n;
  }

  /** Deletes events created before `cutoffMs`; returns how many went. */
  trimBefore(cutoffMs: number): number {
    this.sql.exec(
      "INSERT INTO evh_meta (key, value) VALUES ('last_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      this.last,
    );
    return this.sql.exec("DELETE FROM evh_events WHERE created_at_ms < ?", cutoffMs).rowsWritten;
  }

  saveTicket(ticketHash: string, holder: TicketHolder, expiresAtMs: number): void {
    this.sql.exec(
      "INSERT INTO evh_tickets (ticket_hash, holder, key_id, credentials_expire_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?)",
      ticketHash,
      holder.display,
      holder.keyId,
      holder.expiresAtMs,
      expiresAtMs,
    );
  }

  /**
   * Removes the ticket and returns its holder if it existed and had not expired: a ticket works once. It expires no
   * later than the credentials it was issued for (EventHubCore.issueTicket), so those have not expired either.
   */
  takeTicket(ticketHash: string, nowMs: number): TicketHolder | null {
    const row = this.sql
      .exec<{ holder: string; key_id: string | null; credentials_expire_at_ms: number | null; expires_at_ms: number }>(
        "SELECT holder, key_id, credentials_expire_at_ms, expires_at_ms FROM evh_tickets WHERE ticket_hash = ?",
        ticketHash,
      )
      .toArray()[0];
    if (!row) return null;
    this.sql.exec("DELETE FROM evh_tickets WHERE ticket_hash = ?", ticketHash);
    if (row.expires_at_ms <= nowMs) return null;
    return { display: row.holder, keyId: row.key_id, expiresAtMs: row.credentials_expire_at_ms };
  }

  /** Forgets a revoked key's unused tickets and refuses it until `untilMs`; answers how many tickets went. */
  revokeKey(keyId: string, untilMs: number): number {
    this.sql.exec(
      "INSERT INTO evh_revoked_keys (key_id, until_ms) VALUES (?, ?) ON CONFLICT (key_id) DO UPDATE SET until_ms = excluded.until_ms",
      keyId,
      untilMs,
    );
    return this.sql.exec("DELETE FROM evh_tickets WHERE key_id = ?", keyId).rowsWritten;
  }

  isRevoked(keyId: string, nowMs: number): boolean {
    return (
      this.sql
        .exec<{ n: number }>(
          "SELECT COUNT(*) AS n FROM evh_revoked_keys WHERE key_id = ? AND until_ms > ?",
          keyId,
          nowMs,
        )
        .one().n > 0
    );
  }

  /** Drops expired tickets, and revoked keys no isolate can take any more. */
  trimTickets(nowMs: number): number {
    this.sql.exec("DELETE FROM evh_revoked_keys WHERE until_ms <= ?", nowMs);
    return this.sql.exec("DELETE FROM evh_tickets WHERE expires_at_ms <= ?", nowMs).rowsWritten;
  }

  /** Tickets and revoked keys held: while any are, the hub's alarm keeps coming to trim them. */
  ticketCount(): number {
    return this.sql
      .exec<{ n: number }>("SELECT (SELECT COUNT(*) FROM evh_tickets) + (SELECT COUNT(*) FROM evh_revoked_keys) AS n")
      .one().n;
  }
}
