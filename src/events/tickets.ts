/**
 * WebSocket tickets: browsers cannot set an Authorization header on a
 * WebSocket, and an API key in a URL ends up in logs and history. A ticket is
 * single-use, lives 60 s, and names its workspace so the route knows which hub
 * redeems it: `tkt_<secret>.<workspace_id>`. Only the hub knows the secret's hash.
 */

export const TICKET_PREFIX = "tkt_";
export const EVENTS_WS_PATH = "/api/v1/events/ws";
const TICKET_PATTERN = /^tkt_([A-Za-z0-9_-]{32})\.([A-Za-z0-9_-]{1,128})$/;

export function formatTicket(workspaceId: string, secret: string): string {
  return `${TICKET_PREFIX}${secret}.${workspaceId}`;
}

export function parseTicket(ticket: string): { secret: string; workspaceId: string } | null {
  const match = TICKET_PATTERN.exec(ticket);
  return match ? { secret: match[1], workspaceId: match[2] } : null;
}

/**
 * True for `GET /api/v1/events/ws?ticket=…`: the ticket is the credential, so
 * the global auth middleware lets it through and the route redeems it.
 */
export function isTicketAuthenticatedRequest(request: Request): boolean {
  if (request.method !== "GET") return false;
  const url = new URL(request.url);
  return url.pathname === EVENTS_WS_PATH && (url.searchParams.get("ticket") ?? "") !== "";
}
