import { DurableObject } from "cloudflare:workers";
import type { EventEnvelope } from "../src/events/catalog.ts";
import { PING_FRAME, PONG_FRAME } from "../src/events/frames.ts";
import {
  CONNECT_HEADER,
  decodeConnect,
  EventHubCore,
  type HistoryQuery,
  type HistoryResult,
  type HubHost,
  type HubSocket,
} from "../src/events/hub.ts";
import type { TicketHolder } from "../src/events/log.ts";
import { Logger } from "../src/lib/logger.ts";

/**
 * One per workspace (addressed by workspace id): its hibernatable WebSockets
 * and its seq-numbered event log. A thin shell over EventHubCore.
 */
export class EventHub extends DurableObject {
  private readonly core: EventHubCore;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    const logger = new Logger({ level: "info", sampleRate: 1 }, { object: "EventHub", workspace_id: ctx.id.name });
    // Pings are answered by the runtime: a hibernating hub is not woken for keepalives.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
    const host: HubHost = {
      accept: (socket, tags) => ctx.acceptWebSocket(socket as WebSocket, tags),
      sockets: () => ctx.getWebSockets(),
      getAlarm: () => ctx.storage.getAlarm(),
      setAlarm: (timeMs) => ctx.storage.setAlarm(timeMs),
      warn: (msg, fields) => logger.warn(msg, fields),
    };
    this.core = new EventHubCore(ctx.storage.sql, host);
  }

  async ping(): Promise<{ ok: true; object: "EventHub"; time: string }> {
    return { ok: true, object: "EventHub", time: new Date().toISOString() };
  }

  publish(event: EventEnvelope): Promise<{ seq: number; duplicate: boolean }> {
    return this.core.publish(event);
  }

  /** Several events in one call, appended in order (see src/events/batcher.ts). */
  publishMany(events: EventEnvelope[]): Promise<{ seq: number; duplicate: boolean }[]> {
    return this.core.publishMany(events);
  }

  history(query: HistoryQuery): HistoryResult {
    return this.core.history(query);
  }

  issueTicket(holder: TicketHolder): Promise<{ secret: string; expiresAtMs: number } | null> {
    return this.core.issueTicket(holder);
  }

  revokeKey(keyId: string): Promise<{ closedStreams: number; droppedTickets: number }> {
    return this.core.revokeKey(keyId);
  }

  connectionCount(): number {
    return this.core.connectionCount();
  }

  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket")
      return new Response("expected a WebSocket upgrade", { status: 426 });
    const connect = decodeConnect(request.headers.get(CONNECT_HEADER));
    if (!connect) return new Response("missing connect parameters", { status: 400 });
    if (connect.ticketSecret !== null) {
      const holder = await this.core.redeemTicket(connect.ticketSecret);
      if (holder === null) return new Response("ticket unknown, used or expired", { status: 401 });
      connect.holder = holder.display;
      connect.keyId = holder.keyId;
      connect.credentialsExpireAtMs = holder.expiresAtMs;
    } else if (this.core.refusesKey(connect.keyId ?? null)) return new Response("key revoked", { status: 401 });
    const pair = new WebSocketPair();
    await this.core.connect(pair[1] as HubSocket, connect);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  override async webSocketMessage(socket: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.core.onMessage(socket as HubSocket, message);
  }

  override async webSocketClose(socket: WebSocket, code: number, reason: string): Promise<void> {
    this.core.onClose(socket as HubSocket);
    try {
      // Completes the closing handshake where the runtime does not do it for us.
      socket.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // Already closed.
    }
  }

  override async webSocketError(socket: WebSocket): Promise<void> {
    this.core.onClose(socket as HubSocket);
  }

  override async alarm(): Promise<void> {
    await this.core.alarm();
  }
}
