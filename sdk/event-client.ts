import { EVENT_ID_PATTERN, type EventType, type PublishedEvent, validateEvent } from "../src/events/catalog.ts";
import { PING_FRAME } from "../src/events/frames.ts";
import { channelsOf, checkChannels, checkTypePatterns, Matcher, oversize } from "../src/events/subscription.ts";
import { checkRequestedVersion } from "../src/events/versioning.ts";
import { type BackoffOptions, backoffDelayMs, DEFAULT_BACKOFF } from "./backoff.ts";
import { RecentIds } from "./dedupe.ts";
import { MgxApiError, MgxClient } from "./rest.ts";

/**
 * A client for the event stream that never misses an event: it reconnects
 * with backoff and full jitter, resumes from the last event it processed,
 * buffers what it sends while disconnected, drops duplicates, validates every
 * event against the contract, and says so (`onGap`) when the server can no
 * longer replay and the app must reload its state over HTTP.
 *
 * Uses only the standard WebSocket API: browsers, Node 22, Deno, Workers.
 */

type SocketLike = Pick<WebSocket, "send" | "close" | "readyState" | "addEventListener">;
export type WebSocketFactory = (url: string) => SocketLike;

export interface EventClientOptions {
  baseUrl: string;
  /** Used to fetch a ticket before each connection. In a browser, prefer `getTicket` from your backend. */
  apiKey?: string;
  /** Where a fresh ticket comes from (`POST /api/v1/events/tickets`, done by your backend). */
  getTicket?: () => Promise<string>;
  types?: string[];
  channels?: string[];
  /** Ask the server for events at this `major.minor` (see atVersion). */
  version?: string;
  /** Resume after this event on the first connection. */
  lastEventId?: string;
  backoff?: Partial<BackoffOptions>;
  /** How many recent event ids are kept for deduplication. */
  dedupeCapacity?: number;
  /** Acknowledge (`{"type":"ping","last_seq":N}`) after this many events; the server cuts off clients that do not. */
  ackEvery?: number;
  /** Keepalive ping interval; a connection silent for twice this long is considered dead. */
  pingIntervalMs?: number;
  /** Frames queued while disconnected, at most. */
  maxBufferedFrames?: number;
  WebSocket?: WebSocketFactory;
  random?: () => number;
}

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface GapInfo {
  /** The last event processed before the gap; events after it may be missing. */
  lastEventId: string | null;
}

type Handler<T> = (value: T) => void;

const DEFAULT_ACK_EVERY = 100;
/** Well under the server's 4 MiB allowance of unacknowledged events, whatever their size. */
const ACK_AFTER_BYTES = 512 * 1024;
const DEFAULT_PING_INTERVAL_MS = 25_000;
const DEFAULT_MAX_BUFFERED_FRAMES = 1_000;
const OPEN = 1;
/** The longest delay setTimeout keeps (a signed 32-bit count of milliseconds); a longer one fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

export class EventClient {
  private readonly options: EventClientOptions;
  private readonly backoff: BackoffOptions;
  private readonly rest: MgxClient;
  private readonly recent: RecentIds;
  private readonly handlers = new Map<string, Set<Handler<PublishedEvent>>>();
  private readonly gapHandlers = new Set<Handler<GapInfo>>();
  private readonly errorHandlers = new Set<Handler<Error>>();
  private readonly stateHandlers = new Set<Handler<ConnectionState>>();
  private readonly outbox: string[] = [];
  private socket: SocketLike | null = null;
  private types: string[];
  private channels: string[];
  /** The subscription as this client last set it, applied to what arrives too (see onEvent). */
  private matcher: Matcher;
  private attempt = 0;
  private sinceAck = 0;
  private sinceAckBytes = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private lastMessageAtMs = 0;
  private currentState: ConnectionState = "idle";
  private lastId: string | null;
  private lastSeq = 0;
  /** Bumped by close(): a connection attempt begun before it (awaiting its ticket) opens no socket after it. */
  private generation = 0;

  constructor(options: EventClientOptions) {
    this.options = options;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.rest = new MgxClient({ baseUrl: options.baseUrl, apiKey: options.apiKey });
    this.recent = new RecentIds(options.dedupeCapacity);
    this.types = [...(options.types ?? ["*"])];
    this.channels = [...(options.channels ?? ["*"])];
    this.lastId = options.lastEventId ?? null;
    refuseSubscription(this.types, this.channels, { types: this.types, channels: this.channels });
    this.matcher = new Matcher({ types: this.types, channels: this.channels });
    if (options.version !== undefined) {
      const version = checkRequestedVersion(options.version);
      if (!version.ok) throw new TypeError(`EventClient: ${version.message}`);
    }
    if (this.lastId !== null && !(this.lastId.length <= 64 && EVENT_ID_PATTERN.test(this.lastId)))
      throw new TypeError(`EventClient: lastEventId ${JSON.stringify(this.lastId.slice(0, 80))} is not an event id`);
  }

  /**
   * The resume point: the last event received (handed to the handlers, or outside the subscription).
   * Persist it to resume across page loads.
   */
  get lastEventId(): string | null {
    return this.lastId;
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** A handler for one event type, typed by it; `"*"` for every event. Returns an unsubscribe function. */
  on<K extends EventType>(type: K, handler: Handler<PublishedEvent<K>>): () => void;
  on(type: "*", handler: Handler<PublishedEvent>): () => void;
  on(type: string, handler: Handler<PublishedEvent>): () => void {
    const set = this.handlers.get(type) ?? new Set();
    set.add(handler);
    this.handlers.set(type, set);
    return () => set.delete(handler);
  }

  /** The server could not replay what was missed (`recovered: false`): reload state over HTTP. */
  onGap(handler: Handler<GapInfo>): () => void {
    this.gapHandlers.add(handler);
    return () => this.gapHandlers.delete(handler);
  }

  /** Invalid events, server error frames, handler exceptions, failed connection attempts. */
  onError(handler: Handler<Error>): () => void {
    this.errorHandlers.add(handler);
    return () => this.errorHandlers.delete(handler);
  }

  onStateChange(handler: Handler<ConnectionState>): () => void {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  /** Starts (idempotent); the client keeps itself connected until `close()`. */
  connect(): void {
    if (this.currentState !== "idle" && this.currentState !== "closed") return;
    this.setState("connecting");
    void this.open();
  }

  /**
   * Adds to the subscription. Throws (a TypeError, nothing changed) on what the server would refuse: it would
   * answer with an error frame, and every reconnection URL carrying it would be refused (422) from then on.
   */
  subscribe(types: string[] = [], channels: string[] = []): void {
    const next = {
      types: [...new Set([...this.types, ...types])],
      channels: [...new Set([...this.channels, ...channels])],
    };
    refuseSubscription(types, channels, next);
    this.types = next.types;
    this.channels = next.channels;
    this.matcher = new Matcher(next);
    this.send({ type: "subscribe", types, channels });
  }

  /** Removes from the subscription; throws (a TypeError, nothing changed) on a malformed type pattern or channel. */
  unsubscribe(types: string[] = [], channels: string[] = []): void {
    refuseSubscription(types, channels, { types: [], channels: [] });
    this.types = this.types.filter((type) => !types.includes(type));
    this.channels = this.channels.filter((channel) => !channels.includes(channel));
    this.matcher = new Matcher({ types: this.types, channels: this.channels });
    this.send({ type: "unsubscribe", types, channels });
  }

  close(): void {
    this.generation += 1;
    this.setState("closed");
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    this.socket?.close(1000, "client closed");
    this.socket = null;
  }

  /** Sent now if connected, else queued (bounded, oldest dropped) and flushed on the next connection. */
  private send(frame: unknown): void {
    const text = JSON.stringify(frame);
    if (this.socket && this.socket.readyState === OPEN && this.currentState === "open") {
      this.socket.send(text);
      return;
    }
    this.outbox.push(text);
    const max = this.options.maxBufferedFrames ?? DEFAULT_MAX_BUFFERED_FRAMES;
    if (this.outbox.length > max) this.outbox.splice(0, this.outbox.length - max);
  }

  private async open(): Promise<void> {
    const generation = this.generation;
    let url: string;
    try {
      url = await this.streamUrl();
    } catch (error) {
      if (generation !== this.generation) return;
      this.emitError(error);
      // A key the API refuses (wrong, revoked, expired, or without events:read) stays refused: trying again only
      // counts failures against this address until the API blocks it (429), every other key from it too.
      if (error instanceof MgxApiError && (error.status === 401 || error.status === 403)) this.close();
      // A 429 or 503 says when to ask again: sooner, the ticket is refused again (and counts against the limit).
      else this.scheduleReconnect(error instanceof MgxApiError ? (error.retryAfterSeconds ?? 0) * 1_000 : 0);
      return;
    }
    // Closed meanwhile, and perhaps connected again (a component unmounted and mounted): that attempt is the one.
    if (this.currentState === "closed" || generation !== this.generation) return;
    const factory = this.options.WebSocket ?? ((target: string) => new WebSocket(target));
    let socket: SocketLike;
    try {
      socket = factory(url);
    } catch (error) {
      // WebSocket's constructor throws only what no retry mends (a SyntaxError for its URL, a SecurityError for an
      // insecure ws: from an https: page). Left to reject open()'s promise, it was an unhandled rejection (the end
      // of a Node process) and the client stayed "connecting", onError never told.
      this.emitError(error);
      this.close();
      return;
    }
    this.socket = socket;
    this.sinceAck = 0;
    this.sinceAckBytes = 0;
    // Watched from now, not from "open": an upgrade that never answers (a proxy holding it, a network gone quiet)
    // fires neither open nor close, and left unwatched the client stayed "reconnecting" for good.
    this.lastMessageAtMs = Date.now();
    this.startPings(socket);
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      // The backoff starts again only once the server answers with more than an error (see onFrame): a full hub
      // accepts the upgrade and closes at once (CONNECTION_LIMIT, 1013), and reset here, every client over its cap
      // came back within a second, forever.
      this.lastMessageAtMs = Date.now();
      this.setState("open");
      // The URL carried the current subscription; "nothing" cannot be said there, so say it now.
      if (this.types.length === 0) socket.send(JSON.stringify({ type: "unsubscribe", types: ["*"], channels: [] }));
      if (this.channels.length === 0) socket.send(JSON.stringify({ type: "unsubscribe", types: [], channels: ["*"] }));
      for (const text of this.outbox.splice(0)) socket.send(text);
      this.startPings(socket);
    });
    socket.addEventListener("message", (message) => {
      if (socket !== this.socket) return;
      this.lastMessageAtMs = Date.now();
      this.onFrame(socket, typeof message.data === "string" ? message.data : String(message.data));
    });
    socket.addEventListener("close", () => {
      if (socket !== this.socket) return;
      this.socket = null;
      clearInterval(this.pingTimer);
      if (this.currentState !== "closed") this.scheduleReconnect();
    });
    socket.addEventListener("error", () => {
      // A close event follows; reconnection happens there.
    });
  }

  private async streamUrl(): Promise<string> {
    const ticket = this.options.getTicket
      ? await this.options.getTicket()
      : (await this.rest.events.createTicket()).ticket;
    // Under the base URL's own path, as the ticket was asked (`https://gw.example/mgx` → `wss://gw.example/mgx/api/v1/…`),
    // not at the host's root.
    const url = new URL(`${this.rest.baseUrl}/api/v1/events/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
    url.searchParams.set("ticket", ticket);
    if (this.lastId) url.searchParams.set("last_event_id", this.lastId);
    if (this.types.length) url.searchParams.set("types", this.types.join(","));
    if (this.channels.length) url.searchParams.set("channels", this.channels.join(","));
    if (this.options.version) url.searchParams.set("version", this.options.version);
    return url.toString();
  }

  private onFrame(socket: SocketLike, text: string): void {
    let frame: { type?: string; [key: string]: unknown };
    try {
      frame = JSON.parse(text);
    } catch {
      this.emitError(new Error("the server sent a frame that is not JSON"));
      return;
    }
    // Thrown out of the socket's listener, a TypeError on `null` would end a Node process (an uncaught exception).
    if (typeof frame !== "object" || frame === null) {
      this.emitError(new Error("the server sent a frame that is not a JSON object"));
      return;
    }
    // The server answered with more than a refusal: the connection works, so the next drop retries soon again.
    if (frame.type === "event" || frame.type === "replay" || frame.type === "pong" || frame.type === "subscribed")
      this.attempt = 0;
    switch (frame.type) {
      case "event":
        this.onEvent(socket, frame.event, text.length);
        return;
      case "replay":
        if (frame.recovered === false) {
          // The log may have started again (a hub whose state was lost: local dev): seqs from 1 are new events, not
          // ones already seen, which event_id still tells apart.
          this.lastSeq = 0;
          for (const handler of this.gapHandlers) this.safely(handler, { lastEventId: this.lastId });
        }
        return;
      case "error":
        this.emitError(new Error(`${String(frame.code)}: ${String(frame.message)}`));
        return;
      default:
        return; // pong, subscribed
    }
  }

  private onEvent(socket: SocketLike, raw: unknown, frameBytes: number): void {
    if (typeof raw !== "object" || raw === null) {
      this.emitError(new Error("the server sent an event frame without an event"));
      return;
    }
    const check = validateEvent(raw);
    const candidate = raw as { event_id?: unknown; seq?: unknown };
    const eventId = typeof candidate.event_id === "string" ? candidate.event_id : null;
    const seq = typeof candidate.seq === "number" ? candidate.seq : null;
    if (eventId === null || seq === null) {
      this.emitError(new Error("the server sent an event without event_id or seq"));
      return;
    }
    // seq only grows within a workspace: anything at or below the last one was already handled.
    if (seq <= this.lastSeq || !this.recent.add(eventId)) return;
    this.lastSeq = seq;
    this.lastId = eventId;
    if (!check.ok) {
      this.emitError(
        new Error(
          `invalid event ${eventId}: ${check.issues.map((issue) => `${issue.path} ${issue.message}`).join("; ")}`,
        ),
      );
    } else if (this.matcher.matches(check.event.event_type, channelsOf(check.event))) {
      // The server may still send what this client no longer wants: frames already on their way when it
      // unsubscribed, and after a reconnection a URL cannot ask for "no types", so the replay (before the
      // unsubscribe frame lands) is of every type. They move the resume point but reach no handler.
      const event = { ...check.event, seq } as PublishedEvent;
      for (const handler of this.handlers.get(event.event_type) ?? []) this.safely(handler, event);
      for (const handler of this.handlers.get("*") ?? []) this.safely(handler, event);
    }
    this.sinceAck += 1;
    this.sinceAckBytes += frameBytes;
    const due = this.sinceAck >= (this.options.ackEvery ?? DEFAULT_ACK_EVERY) || this.sinceAckBytes >= ACK_AFTER_BYTES;
    if (due && socket.readyState === OPEN) {
      this.sinceAck = 0;
      this.sinceAckBytes = 0;
      socket.send(JSON.stringify({ type: "ping", last_seq: seq }));
    }
  }

  private startPings(socket: SocketLike): void {
    clearInterval(this.pingTimer);
    const intervalMs = this.options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS;
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastMessageAtMs > 2 * intervalMs) {
        // Silent too long: the connection is dead even if no close event came.
        socket.close(4000, "no answer to pings");
        this.socket = null;
        clearInterval(this.pingTimer);
        this.scheduleReconnect();
        return;
      }
      if (socket.readyState !== OPEN) return;
      // Acknowledgements get no answer; the plain ping does (from the runtime, without waking the hub).
      if (this.sinceAck > 0) socket.send(JSON.stringify({ type: "ping", last_seq: this.lastSeq }));
      this.sinceAck = 0;
      this.sinceAckBytes = 0;
      socket.send(PING_FRAME);
    }, intervalMs);
  }

  /** After backoff, or `atLeastMs` when the server said to wait that long (Retry-After). */
  private scheduleReconnect(atLeastMs = 0): void {
    if (this.currentState === "closed") return;
    this.setState("reconnecting");
    const delayMs = Math.min(
      Math.max(backoffDelayMs(this.attempt, this.backoff, this.options.random), atLeastMs),
      MAX_TIMER_MS,
    );
    this.attempt += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.open(), delayMs);
  }

  private setState(state: ConnectionState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    for (const handler of this.stateHandlers) this.safely(handler, state);
  }

  private emitError(error: unknown): void {
    const asError = error instanceof Error ? error : new Error(String(error));
    for (const handler of this.errorHandlers) {
      try {
        handler(asError);
      } catch {
        // An error handler that throws has nowhere to report to.
      }
    }
  }

  private safely<T>(handler: Handler<T>, value: T): void {
    try {
      handler(value);
    } catch (error) {
      this.emitError(error);
    }
  }
}

/** The server's own checks (src/events/subscription.ts), so a subscription it would refuse never leaves the client. */
function refuseSubscription(
  types: string[],
  channels: string[],
  result: { types: string[]; channels: string[] },
): void {
  const checkedTypes = checkTypePatterns(types);
  if (!checkedTypes.ok) throw new TypeError(`EventClient: ${checkedTypes.message}`);
  const checkedChannels = checkChannels(channels);
  if (!checkedChannels.ok) throw new TypeError(`EventClient: ${checkedChannels.message}`);
  const tooLarge = oversize(result);
  if (tooLarge) throw new TypeError(`EventClient: ${tooLarge}`);
}
