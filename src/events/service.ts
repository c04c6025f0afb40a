import type { Principal } from "../auth/principal.ts";
import { createDb } from "../db/client.ts";
import type { AppConfig } from "../env.ts";
import { ApiError } from "../lib/problem.ts";
import { findWorkspace } from "../workspaces/service.ts";
import type { PublishedEvent } from "./catalog.ts";
import { CONNECT_HEADER, encodeConnect, type HubConnectRequest } from "./hub.ts";
import type { TicketHolder } from "./log.ts";
import { checkChannels, checkTypePatterns, splitList } from "./subscription.ts";
import { formatTicket, parseTicket } from "./tickets.ts";
import { checkRequestedVersion } from "./versioning.ts";

/** What the events routes call: access checks, query parsing, and the round trips to the hub. */

type Hubs = Pick<AppConfig, "EVENT_HUB">;

export interface Filters {
  types: string[];
  channels: string[];
  version: string | null;
}

/** The caller's workspace, if the principal may read its events. */
export function eventsReaderWorkspace(principal: Principal | undefined): string {
  if (!principal) throw new ApiError("UNAUTHENTICATED");
  if (principal.workspaceId === null)
    throw new ApiError("FORBIDDEN", "Events belong to a workspace; use a workspace API key or token.");
  if (!principal.scopes.has("events:read") && !principal.scopes.has("admin"))
    throw new ApiError("FORBIDDEN", "The credentials lack the events:read scope.");
  return principal.workspaceId;
}

/** `?types=`, `?channels=`, `?version=` → checked filters, or a 422 naming the parameter. */
export function parseFilters(query: { types?: string; channels?: string; version?: string }): Filters {
  const types = checkTypePatterns(splitList(query.types));
  if (!types.ok) throw invalid("types", types.message);
  const channels = checkChannels(splitList(query.channels));
  if (!channels.ok) throw invalid("channels", channels.message);
  let version: string | null = null;
  if (query.version) {
    const checked = checkRequestedVersion(query.version);
    if (!checked.ok) throw invalid("version", checked.message);
    version = checked.version;
  }
  return { types: types.values, channels: channels.values, version };
}

function invalid(path: string, message: string): ApiError {
  return new ApiError("VALIDATION_FAILED", `The query parameter ${path} is invalid.`, { errors: [{ path, message }] });
}

const CURSOR_PREFIX = "seq:";

function encodeCursor(seq: number): string {
  return btoa(`${CURSOR_PREFIX}${seq}`).replaceAll("=", "");
}

function decodeCursor(cursor: string): number {
  let text = "";
  try {
    text = atob(cursor);
  } catch {
    // Falls through to the 422.
  }
  const seq = Number(text.slice(CURSOR_PREFIX.length));
  if (!text.startsWith(CURSOR_PREFIX) || !Number.isSafeInteger(seq) || seq < 0)
    throw invalid("cursor", "not a cursor this API returned");
  return seq;
}

export async function listEvents(
  config: Hubs,
  workspaceId: string,
  query: { after?: string; cursor?: string; limit: number } & Filters,
): Promise<{ data: PublishedEvent[]; next_cursor: string | null }> {
  const result = await config.EVENT_HUB.getByName(workspaceId).history({
    afterEventId: query.cursor ? null : (query.after ?? null),
    afterSeq: query.cursor ? decodeCursor(query.cursor) : 0,
    limit: query.limit,
    types: query.types,
    channels: query.channels,
    version: query.version,
  });
  if (!result.ok)
    throw new ApiError(
      "NOT_FOUND",
      result.reason === "trimmed"
        ? "Events after this cursor are older than the retention window and were deleted; reload state instead."
        : `Event ${query.after} is not in this workspace's log (unknown, or older than the retention window); reload state instead.`,
    );
  return {
    data: result.events.map((json) => JSON.parse(json) as PublishedEvent),
    next_cursor: result.nextSeq === null ? null : encodeCursor(result.nextSeq),
  };
}

export async function createTicket(
  config: Hubs,
  workspaceId: string,
  holder: TicketHolder,
): Promise<{ ticket: string; expires_at: string }> {
  const issued = await config.EVENT_HUB.getByName(workspaceId).issueTicket(holder);
  // The key was revoked from another isolate, which refuses it already; this one's cached copy has a moment left.
  if (!issued) throw invalidCredentials();
  return { ticket: formatTicket(workspaceId, issued.secret), expires_at: new Date(issued.expiresAtMs).toISOString() };
}

/**
 * Who a stream or ticket is for: what logs show, the API key a revocation closes it with, and when its credentials
 * expire, which closes it too.
 */
export function holderOf(principal: Principal | undefined): TicketHolder {
  return {
    display: principal?.display ?? "unknown",
    keyId: principal?.kind === "api_key" ? principal.keyId : null,
    expiresAtMs: (principal?.kind !== "operator" && principal?.expiresAtMs) || null,
  };
}

/**
 * Closes the streams of a key just revoked and forgets its tickets (EventHubCore.revokeKey): revocation is
 * immediate for what the key opened too. Answers what it closed.
 */
export function revokeKeyStreams(
  config: Hubs,
  workspaceId: string,
  keyId: string,
): Promise<{ closedStreams: number; droppedTickets: number }> {
  return config.EVENT_HUB.getByName(workspaceId).revokeKey(keyId);
}

export interface StreamQuery {
  ticket?: string;
  last_event_id?: string;
  types?: string;
  channels?: string;
  version?: string;
}

/**
 * Forwards a WebSocket upgrade to the workspace's hub. With a ticket, the
 * workspace comes from the ticket and the hub redeems it; otherwise the
 * authenticated principal must be allowed to read events.
 */
export async function openEventStream(
  config: Hubs & Pick<AppConfig, "DB">,
  request: Request,
  principal: Principal | undefined,
  query: StreamQuery,
): Promise<Response> {
  if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket")
    throw new ApiError("BAD_REQUEST", "This endpoint is a WebSocket: send `Upgrade: websocket`.");
  let workspaceId: string;
  let ticketSecret: string | null = null;
  let holder: TicketHolder;
  if (query.ticket) {
    const ticket = parseTicket(query.ticket);
    if (!ticket) throw new ApiError("UNAUTHENTICATED", "The ticket is malformed.");
    // The ticket names the hub that redeems it, and a Durable Object comes into being when first called: a forged
    // ticket naming a made-up workspace made one (and wrote its tables) per request, for anyone, unauthenticated.
    // Only an existing workspace's hub is asked; the answer is the same as for an unknown ticket.
    if (!(await findWorkspace(createDb(config.DB), ticket.workspaceId))) throw unknownTicket();
    workspaceId = ticket.workspaceId;
    ticketSecret = ticket.secret;
    // The hub names the holder from the ticket it redeems.
    holder = { display: "ticket", keyId: null, expiresAtMs: null };
  } else {
    workspaceId = eventsReaderWorkspace(principal);
    holder = holderOf(principal);
  }
  const filters = parseFilters(query);
  const connect: HubConnectRequest = {
    ...filters,
    lastEventId: query.last_event_id ?? null,
    holder: holder.display,
    keyId: holder.keyId,
    credentialsExpireAtMs: holder.expiresAtMs,
    ticketSecret,
  };
  const headers = new Headers({ Upgrade: "websocket", [CONNECT_HEADER]: encodeConnect(connect) });
  const response = await config.EVENT_HUB.getByName(workspaceId).fetch("https://event-hub/connect", { headers });
  // A ticket unknown, used or expired; or a key revoked from another isolate (see EventHubCore.refusesKey).
  if (response.status === 401) throw ticketSecret !== null ? unknownTicket() : invalidCredentials();
  if (response.status !== 101 || !response.webSocket)
    throw new Error(`event hub refused the upgrade: ${response.status}`);
  // A fresh response: the hub's has immutable headers, and middleware adds its own.
  return new Response(null, { status: 101, webSocket: response.webSocket });
}

function unknownTicket(): ApiError {
  return new ApiError("UNAUTHENTICATED", "The ticket is unknown, used or expired.");
}

/** As the authentication middleware answers a token it refuses. */
function invalidCredentials(): ApiError {
  return new ApiError("UNAUTHENTICATED", "Invalid credentials.");
}
