import { sha256Hex, toBase64Url } from "../lib/crypto.ts";
import { utf8ByteLength } from "../lib/unicode.ts";
import { Backlog } from "./backlog.ts";
import type { EventEnvelope } from "./catalog.ts";
import {
  CLOSE_POLICY,
  CLOSE_TRY_AGAIN_LATER,
  ClientFrameSchema,
  ERROR_CODES,
  errorFrame,
  eventFrame,
  PONG_FRAME,
  replayFrame,
} from "./frames.ts";
import { EventLog, type LogRow, type TicketHolder } from "./log.ts";
import {
  addTo,
  channelsOf,
  checkChannels,
  checkTypePatterns,
  initialSubscription,
  Matcher,
  oversize,
  removeFrom,
  type Subscription,
} from "./subscription.ts";
import { atVersion } from "./versioning.ts";

/**
 * The workspace's event hub, as a plain class: the Durable Object in
 * durable-objects/event-hub.ts is a thin shell that hands it its SQLite
 * storage, its hibernatable sockets and its alarm. Everything that must not
 * interleave (seq assignment, append, fan-out, replay) runs synchronously in
 * one turn, so a resuming client sees the replay and then live events with no
 * gap and no duplicate at the boundary.
 */

export interface HubLimits {
  /** Events older than this are trimmed by the alarm. */
  retentionMs: number;
  /** How often the alarm trims while the log is not empty. */
  trimIntervalMs: number;
  /** A resume further behind than this gets `recovered: false` and reloads over HTTP. */
  replayMaxEvents: number;
  /** Bytes sent to one socket and not yet acknowledged before it counts as a slow consumer (close 1013). */
  maxUnackedBytes: number;
  maxConnections: number;
  ticketTtlMs: number;
}

/**
 * The furthest ahead the alarm is set: a stream's credentials may expire later than the runtime takes an alarm for
 * ("dates after 2189" throw), so one that far off is looked at again then, and the alarm set anew.
 */
const MAX_ALARM_AHEAD_MS = 30 * 24 * 60 * 60 * 1000;

export const DEFAULT_LIMITS: HubLimits = {
  retentionMs: 7 * 24 * 60 * 60 * 1000,
  trimIntervalMs: 60 * 60 * 1000,
  replayMaxEvents: 1_000,
  maxUnackedBytes: 4 * 1024 * 1024,
  maxConnections: 1_000,
  ticketTtlMs: 60_000,
};

/** What the hub needs of a WebSocket: the standard API plus the runtime's attachment. */
export interface HubSocket {
  send(message: string): void;
  close(code?: number, reason?: string): void;
  serializeAttachment(value: unknown): void;
  deserializeAttachment(): unknown;
  readonly readyState: number;
}

/** What the hub needs of its Durable Object. */
export interface HubHost {
  accept(socket: HubSocket, tags: string[]): void;
  sockets(): HubSocket[];
  getAlarm(): Promise<number | null>;
  setAlarm(timeMs: number): Promise<void>;
  /** Operational warnings (a slow consumer cut off, a full hub). */
  warn?(msg: string, fields: Record<string, unknown>): void;
}

export interface ConnectRequest {
  types: string[];
  channels: string[];
  /** The version the client asked for; null = events as stored. */
  version: string | null;
  lastEventId: string | null;
  /** Who connects, for logs: a key's display name, "ticket", … */
  holder: string;
  /** The API key the connection stands for (directly, or through the ticket it was issued to); absent or null: none. */
  keyId?: string | null;
  /** When the credentials the connection stands for expire (a key's `expires_at`, a JWT's `exp`); absent or null: never. */
  credentialsExpireAtMs?: number | null;
}

/** Set by the events route on the upgrade it forwards to the hub: the checked connect parameters. */
export const CONNECT_HEADER = "X-Mgx-Event-Connect";

export interface HubConnectRequest extends ConnectRequest {
  /** The ticket's secret when the client authenticated with `?ticket=`; the hub redeems it, once. */
  ticketSecret: string | null;
}

/** Header-safe (ASCII) encoding: a key's display name may hold any character. */
export function encodeConnect(request: HubConnectRequest): string {
  return encodeURIComponent(JSON.stringify(request));
}

export function decodeConnect(header: string | null): HubConnectRequest | null {
  if (!header) return null;
  try {
    return JSON.parse(decodeURIComponent(header)) as HubConnectRequest;
  } catch {
    return null;
  }
}

export interface HistoryQuery {
  afterEventId?: string | null;
  afterSeq?: number;
  limit: number;
  types: string[];
  channels: string[];
  version: string | null;
}

/** Events as JSON text: stored that way, and plain strings cross the RPC boundary cheaply. */
export type HistoryResult =
  | { ok: true; events: string[]; nextSeq: number | null }
  | { ok: false; reason: "unknown_after" }
  /** Events after the cursor were trimmed (older than the retention window): paging on would skip them. */
  | { ok: false; reason: "trimmed" };

/** Kept in the socket's attachment, so it survives hibernation. */
interface Attachment {
  subscription: Subscription;
  version: string | null;
  holder: string;
  /** Absent on sockets attached before keys were recorded. */
  keyId?: string | null;
  /** The stream is closed then (CREDENTIALS_EXPIRED). Absent on sockets attached before expiries were recorded. */
  credentialsExpireAtMs?: number | null;
}

interface SocketState extends Attachment {
  matcher: Matcher;
  backlog: Backlog;
  closing: boolean;
}

interface PendingPublish {
  event: EventEnvelope;
  resolve(result: { seq: number; duplicate: boolean }): void;
  reject(error: unknown): void;
}

const OPEN = 1;
const HISTORY_SCAN_ROWS = 2_000;
const TICKET_BYTES = 24;
/** How long a revoked key is refused here: far past the 4 s other isolates may take it from their caches (CACHE_TTL_MS). */
const REVOKED_KEY_REFUSED_MS = 60_000;
const MAX_TAGS = 10;

export class EventHubCore {
  readonly log: EventLog;
  private readonly host: HubHost;
  private readonly limits: HubLimits;
  private readonly now: () => number;
  private readonly states = new WeakMap<HubSocket, SocketState>();
  private alarmSet = false;
  private pending: PendingPublish[] = [];
  private flushScheduled = false;

  constructor(sql: SqlStorage, host: HubHost, limits: HubLimits = DEFAULT_LIMITS, now: () => number = Date.now) {
    this.log = new EventLog(sql);
    this.host = host;
    this.limits = limits;
    this.now = now;
  }

  /**
   * Assigns the next seq, appends, and fans out to matching sockets. Publishing an event_id twice is a no-op.
   * Publishes that arrive together are appended in one turn (group commit): one storage commit for the
   * batch instead of one per event, while sends still wait for that commit (the output gate).
   */
  publish(event: EventEnvelope): Promise<{ seq: number; duplicate: boolean }> {
    const published = new Promise<{ seq: number; duplicate: boolean }>((resolve, reject) =>
      this.pending.push({ event, resolve, reject }),
    );
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setTimeout(() => this.flush(), 0);
    }
    return this.ensureAlarm().then(() => published);
  }

  /**
   * Several events in one call (src/events/batcher.ts), appended in one turn
   * after any single publishes already waiting, so seq follows arrival.
   */
  publishMany(events: readonly EventEnvelope[]): Promise<{ seq: number; duplicate: boolean }[]> {
    if (this.pending.length > 0) this.flush();
    let results: { seq: number; duplicate: boolean }[];
    try {
      results = this.append(events);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.ensureAlarm().then(() => results);
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.pending.splice(0);
    let results: { seq: number; duplicate: boolean }[];
    try {
      results = this.append(batch.map(({ event }) => event));
    } catch (error) {
      for (const { reject } of batch) reject(error);
      return;
    }
    for (const [index, { resolve }] of batch.entries()) resolve(results[index]);
  }

  /** Appends in order and sends each new event to the sockets that match it (looked up once per call). */
  private append(events: readonly EventEnvelope[]): { seq: number; duplicate: boolean }[] {
    const nowMs = this.now();
    const results = this.log.appendMany(
      events.map((event) => ({
        eventId: event.event_id,
        eventType: event.event_type,
        channels: channelsOf(event),
        createdAtMs: nowMs,
        bodyOf: (seq: number) => JSON.stringify({ ...event, seq }),
      })),
    );
    const sockets = this.host.sockets().filter((socket) => socket.readyState === OPEN);
    if (sockets.length > 0) {
      for (const { row, duplicate } of results) if (!duplicate) this.fanOut(row, sockets, nowMs);
    }
    return results.map(({ row, duplicate }) => ({ seq: row.seq, duplicate }));
  }

  private fanOut(row: LogRow, sockets: readonly HubSocket[], nowMs: number): void {
    const frame = sized(eventFrame(row.body));
    const channels = row.channels ? row.channels.split(",") : [];
    let versionedFrames: Map<string, SizedFrame> | undefined;
    for (const socket of sockets) {
      const state = this.stateOf(socket);
      if (!state || state.closing || socket.readyState !== OPEN) continue;
      // The alarm closes it at that moment; an event that comes first must not reach it either.
      if (this.closeIfExpired(socket, state, nowMs)) continue;
      if (!state.matcher.matches(row.event_type, channels)) continue;
      let out = frame;
      if (state.version) {
        versionedFrames ??= new Map();
        out = versionedFrames.get(state.version) ?? sized(versionedFrame(row.body, state.version));
        versionedFrames.set(state.version, out);
      }
      this.sendLive(socket, state, row.seq, out);
    }
  }

  /** A socket too far behind is not read fast enough: cut it off rather than queue without bound. */
  private sendLive(socket: HubSocket, state: SocketState, seq: number, frame: SizedFrame): void {
    try {
      socket.send(frame.text);
    } catch {
      state.closing = true;
      return;
    }
    state.backlog.sent(seq, frame.bytes());
    const unackedBytes = state.backlog.bytes();
    if (unackedBytes > this.limits.maxUnackedBytes) {
      state.closing = true;
      this.host.warn?.("slow event consumer disconnected", { unacked_bytes: unackedBytes, holder: state.holder });
      try {
        socket.send(
          errorFrame(ERROR_CODES.SLOW_CONSUMER, "Too many undelivered events; reconnect with last_event_id."),
        );
        socket.close(CLOSE_TRY_AGAIN_LATER, "slow consumer: resume with last_event_id");
      } catch {
        // Already closing.
      }
    }
  }

  /**
   * A new socket: accepted (or refused with a frame), then replayed from `lastEventId`, all in one turn; then the
   * alarm is brought forward to when its credentials expire, if that is sooner.
   */
  async connect(socket: HubSocket, request: ConnectRequest): Promise<void> {
    const open = this.host.sockets().filter((other) => other.readyState === OPEN).length;
    const subscription = initialSubscription(request.types, request.channels);
    const tags = subscription.channels.slice(0, MAX_TAGS).map((channel) => channel.slice(0, 256));
    this.host.accept(socket, tags);
    if (open >= this.limits.maxConnections) {
      this.host.warn?.("event connection refused: hub full", { connections: open, holder: request.holder });
      socket.send(
        errorFrame(
          ERROR_CODES.CONNECTION_LIMIT,
          `This workspace already has ${open} event connections (limit ${this.limits.maxConnections}).`,
        ),
      );
      socket.close(CLOSE_TRY_AGAIN_LATER, "connection limit");
      return;
    }
    const attachment: Attachment = {
      subscription,
      version: request.version,
      holder: request.holder,
      keyId: request.keyId ?? null,
      credentialsExpireAtMs: request.credentialsExpireAtMs ?? null,
    };
    socket.serializeAttachment(attachment);
    const state: SocketState = {
      ...attachment,
      matcher: new Matcher(subscription),
      backlog: new Backlog(),
      closing: false,
    };
    this.states.set(socket, state);
    // Expired between the route's check and here (a ticket redeemed at its credentials' last moment).
    if (this.closeIfExpired(socket, state, this.now())) return;
    if (request.lastEventId !== null) this.replay(socket, state, request.lastEventId);
    if (attachment.credentialsExpireAtMs != null) await this.alarmBy(attachment.credentialsExpireAtMs);
  }

  private replay(socket: HubSocket, state: SocketState, lastEventId: string): void {
    const from = this.log.byEventId(lastEventId);
    if (!from || this.log.lastSeq() - from.seq > this.limits.replayMaxEvents) {
      socket.send(replayFrame(false, 0));
      return;
    }
    const frames: { seq: number; frame: string }[] = [];
    for (const row of this.log.after(from.seq, this.limits.replayMaxEvents)) {
      if (!state.matcher.matches(row.event_type, row.channels ? row.channels.split(",") : [])) continue;
      frames.push({
        seq: row.seq,
        frame: state.version ? versionedFrame(row.body, state.version) : eventFrame(row.body),
      });
    }
    socket.send(replayFrame(true, frames.length));
    // Bounded by replayMaxEvents, and not counted against the slow-consumer limit (see Backlog.sent).
    for (const { seq, frame } of frames) {
      socket.send(frame);
      state.backlog.sent(seq, frame.length, false);
    }
  }

  onMessage(socket: HubSocket, message: string | ArrayBuffer): void {
    // Closed by the hub (a slow consumer, a full hub): frames the client sent before it saw the close still
    // arrive, and an answer would throw ("send() after close()") out of the Durable Object's handler.
    if (socket.readyState !== OPEN) return;
    const state = this.stateOf(socket);
    if (!state || this.closeIfExpired(socket, state, this.now())) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(typeof message === "string" ? message : new TextDecoder().decode(message));
    } catch {
      socket.send(errorFrame(ERROR_CODES.BAD_FRAME, "Frames are JSON objects."));
      return;
    }
    // Acknowledgements are the frequent frame: handled before the schema, and not answered.
    const ack = parsed as { type?: unknown; last_seq?: unknown };
    if (ack?.type === "ping" && Number.isSafeInteger(ack.last_seq)) {
      state.backlog.ack(ack.last_seq as number);
      return;
    }
    const frame = ClientFrameSchema.safeParse(parsed);
    if (!frame.success) {
      socket.send(errorFrame(ERROR_CODES.BAD_FRAME, frameProblem(ack?.type, frame.error.issues[0])));
      return;
    }
    if (frame.data.type === "ping") {
      // The exact `{"type":"ping"}` never gets here (the runtime answers it); other spellings do.
      socket.send(PONG_FRAME);
      return;
    }
    const types = checkTypePatterns(frame.data.types);
    const channels = checkChannels(frame.data.channels);
    if (!types.ok || !channels.ok) {
      socket.send(
        errorFrame(ERROR_CODES.BAD_FRAME, types.ok ? (channels as { message: string }).message : types.message),
      );
      return;
    }
    const change = frame.data.type === "subscribe" ? addTo : removeFrom;
    const subscription = change(state.subscription, types.values, channels.values);
    const tooLarge = oversize(subscription);
    if (tooLarge) {
      socket.send(errorFrame(ERROR_CODES.BAD_FRAME, tooLarge));
      return;
    }
    socket.serializeAttachment({
      subscription,
      version: state.version,
      holder: state.holder,
      keyId: state.keyId,
      credentialsExpireAtMs: state.credentialsExpireAtMs,
    } satisfies Attachment);
    state.subscription = subscription;
    state.matcher = new Matcher(subscription);
    socket.send(JSON.stringify({ type: "subscribed", ...subscription }));
  }

  onClose(socket: HubSocket): void {
    this.states.delete(socket);
  }

  /** After hibernation the in-memory map is empty: the attachment rebuilds the state. */
  private stateOf(socket: HubSocket): SocketState | undefined {
    const known = this.states.get(socket);
    if (known) return known;
    const attachment = socket.deserializeAttachment() as Attachment | null;
    if (!attachment?.subscription) return undefined;
    // Unacknowledged bytes are not carried over: a hub only hibernates once nothing is in flight.
    const state: SocketState = {
      ...attachment,
      matcher: new Matcher(attachment.subscription),
      backlog: new Backlog(),
      closing: false,
    };
    this.states.set(socket, state);
    return state;
  }

  /** A page of the log, filtered, for `GET /api/v1/events`. */
  history(query: HistoryQuery): HistoryResult {
    let afterSeq = query.afterSeq ?? 0;
    if (query.afterEventId) {
      const row = this.log.byEventId(query.afterEventId);
      if (!row) return { ok: false, reason: "unknown_after" };
      afterSeq = row.seq;
    }
    const matcher = new Matcher(initialSubscription(query.types, query.channels));
    const events: string[] = [];
    const rows = this.log.after(afterSeq, HISTORY_SCAN_ROWS);
    // seq has no holes (appendMany), so a first row past afterSeq + 1, or none while the log goes further, means the
    // alarm trimmed events after this point since the cursor was given: told, as a resume or `?after=` would be.
    if (afterSeq > 0 && (rows[0]?.seq ?? this.log.lastSeq() + 1) > afterSeq + 1)
      return { ok: false, reason: "trimmed" };
    let lastScanned = afterSeq;
    for (const row of rows) {
      lastScanned = row.seq;
      if (!matcher.matches(row.event_type, row.channels ? row.channels.split(",") : [])) continue;
      events.push(
        query.version ? JSON.stringify(atVersion(JSON.parse(row.body) as EventEnvelope, query.version)) : row.body,
      );
      if (events.length === query.limit) break;
    }
    const more =
      lastScanned < this.log.lastSeq() && (events.length === query.limit || rows.length === HISTORY_SCAN_ROWS);
    return { ok: true, events, nextSeq: more ? lastScanned : null };
  }

  /** A single-use secret for a browser WebSocket; only its hash is stored. Null: the holder's key was revoked. */
  async issueTicket(holder: TicketHolder): Promise<{ secret: string; expiresAtMs: number } | null> {
    if (this.refusesKey(holder.keyId)) return null;
    const secret = toBase64Url(crypto.getRandomValues(new Uint8Array(TICKET_BYTES)));
    // No later than the credentials it is issued for: it is refused then (takeTicket), and its expires_at says so.
    const expiresAtMs = Math.min(this.now() + this.limits.ticketTtlMs, holder.expiresAtMs ?? Number.POSITIVE_INFINITY);
    this.log.saveTicket(await sha256Hex(secret), holder, expiresAtMs);
    await this.ensureAlarm();
    return { secret, expiresAtMs };
  }

  async redeemTicket(secret: string): Promise<TicketHolder | null> {
    const holder = this.log.takeTicket(await sha256Hex(secret), this.now());
    return holder && !this.refusesKey(holder.keyId) ? holder : null;
  }

  /**
   * True for an API key revoked lately. The revoking isolate refuses the key at once, but another may take it from
   * its cache for a few seconds more (src/auth/authenticate.ts): a stream it opened then would outlive the revocation.
   */
  refusesKey(keyId: string | null): boolean {
    return keyId !== null && this.log.isRevoked(keyId, this.now());
  }

  /**
   * An API key was revoked: its open streams are told and closed (1008: reconnecting with it cannot help), its
   * unused tickets forgotten, and the key refused here for a minute, past any isolate's cached copy of it.
   */
  async revokeKey(keyId: string): Promise<{ closedStreams: number; droppedTickets: number }> {
    const droppedTickets = this.log.revokeKey(keyId, this.now() + REVOKED_KEY_REFUSED_MS);
    let closedStreams = 0;
    for (const socket of this.host.sockets()) {
      const state = this.stateOf(socket);
      if (!state || state.keyId !== keyId || socket.readyState !== OPEN) continue;
      closedStreams++;
      this.closeForCredentials(socket, state, ERROR_CODES.CREDENTIALS_REVOKED, "credentials revoked");
    }
    await this.ensureAlarm();
    return { closedStreams, droppedTickets };
  }

  /**
   * Closes the streams whose credentials have expired, trims events past the retention window and expired tickets;
   * keeps itself scheduled while there is data to trim or a stream whose credentials will expire.
   */
  async alarm(): Promise<{ trimmedEvents: number; trimmedTickets: number; expiredStreams: number }> {
    const nowMs = this.now();
    let expiredStreams = 0;
    for (const socket of this.host.sockets()) {
      const state = socket.readyState === OPEN ? this.stateOf(socket) : undefined;
      if (state && !state.closing && this.closeIfExpired(socket, state, nowMs)) expiredStreams++;
    }
    const trimmedEvents = this.log.trimBefore(nowMs - this.limits.retentionMs);
    const trimmedTickets = this.log.trimTickets(nowMs);
    this.alarmSet = false;
    const nextMs = this.nextAlarmMs(nowMs);
    if (nextMs !== null) {
      await this.host.setAlarm(nextMs);
      this.alarmSet = true;
    }
    return { trimmedEvents, trimmedTickets, expiredStreams };
  }

  /** The next trim while there is data, or the next expiry of a stream's credentials if sooner; null: neither. */
  private nextAlarmMs(nowMs: number): number | null {
    const trimAtMs =
      this.log.count() > 0 || this.log.ticketCount() > 0
        ? nowMs + this.limits.trimIntervalMs
        : Number.POSITIVE_INFINITY;
    const nextMs = Math.min(trimAtMs, this.earliestCredentialsExpiryMs());
    return Number.isFinite(nextMs) ? Math.min(nextMs, nowMs + MAX_ALARM_AHEAD_MS) : null;
  }

  private earliestCredentialsExpiryMs(): number {
    let earliestMs = Number.POSITIVE_INFINITY;
    for (const socket of this.host.sockets()) {
      const state = socket.readyState === OPEN ? this.stateOf(socket) : undefined;
      if (state && !state.closing && state.credentialsExpireAtMs != null)
        earliestMs = Math.min(earliestMs, state.credentialsExpireAtMs);
    }
    return earliestMs;
  }

  private async ensureAlarm(): Promise<void> {
    if (this.alarmSet) return;
    this.alarmSet = true;
    if ((await this.host.getAlarm()) !== null) return;
    // A stream's expiry is counted too: connect may have read no alarm either, and the later write wins.
    const nowMs = this.now();
    await this.host.setAlarm(Math.min(nowMs + this.limits.trimIntervalMs, this.earliestCredentialsExpiryMs()));
  }

  /** Brings the alarm forward to `expiryMs` (or MAX_ALARM_AHEAD_MS from now, if sooner) unless it already comes by then. */
  private async alarmBy(expiryMs: number): Promise<void> {
    // An expiry far ahead (a key's expires_at may be any date; alarms stop at 2189) is checked again on the way.
    const timeMs = Math.min(expiryMs, this.now() + MAX_ALARM_AHEAD_MS);
    const currentMs = await this.host.getAlarm();
    if (currentMs === null || currentMs > timeMs) await this.host.setAlarm(timeMs);
    this.alarmSet = true;
  }

  /** Closes the stream if its credentials have expired; true if they have. */
  private closeIfExpired(socket: HubSocket, state: SocketState, nowMs: number): boolean {
    if (state.credentialsExpireAtMs == null || state.credentialsExpireAtMs > nowMs) return false;
    this.closeForCredentials(socket, state, ERROR_CODES.CREDENTIALS_EXPIRED, "credentials expired");
    return true;
  }

  /** Revoked or expired credentials: told, then closed with 1008, as reconnecting with them cannot help. */
  private closeForCredentials(
    socket: HubSocket,
    state: SocketState,
    code: typeof ERROR_CODES.CREDENTIALS_REVOKED | typeof ERROR_CODES.CREDENTIALS_EXPIRED,
    reason: string,
  ): void {
    state.closing = true;
    const message =
      code === ERROR_CODES.CREDENTIALS_REVOKED
        ? "The API key this stream was opened with was revoked."
        : "The credentials this stream was opened with have expired.";
    try {
      socket.send(errorFrame(code, message));
      socket.close(CLOSE_POLICY, reason);
    } catch {
      // Already closing.
    }
  }

  connectionCount(): number {
    return this.host.sockets().filter((socket) => socket.readyState === OPEN).length;
  }
}

const CLIENT_FRAME_TYPES: readonly unknown[] = ["subscribe", "unsubscribe", "ping"];

/** A frame of a known type says which field is wrong; "Expected a subscribe…" would send the client looking elsewhere. */
function frameProblem(type: unknown, issue: { path: PropertyKey[]; message: string } | undefined): string {
  if (!CLIENT_FRAME_TYPES.includes(type) || !issue) return "Expected a subscribe, unsubscribe or ping frame.";
  const field = issue.path.map(String).join(".");
  return `Invalid ${type as string} frame: ${field ? `${field}: ` : ""}${issue.message}`;
}

/** A frame and its size in UTF-8 bytes, what the slow-consumer limit counts: measured once, for the first socket. */
interface SizedFrame {
  text: string;
  bytes(): number;
}

function sized(text: string): SizedFrame {
  let bytes: number | undefined;
  return { text, bytes: () => (bytes ??= utf8ByteLength(text)) };
}

function versionedFrame(body: string, version: string): string {
  return eventFrame(JSON.stringify(atVersion(JSON.parse(body) as EventEnvelope, version)));
}
