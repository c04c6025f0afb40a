// The baseline for bench/events: a hibernating Durable Object that only
// forwards. No log, no validation, no filtering, no auth, no middleware.
// Plain JS so the Node-side typecheck does not need the Workers types; it never
// ships (its own wrangler.toml, started only by bench/events/run.ts).
import { DurableObject } from "cloudflare:workers";

export class BareHub extends DurableObject {
  async fetch() {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  broadcast(text) {
    for (const socket of this.ctx.getWebSockets()) socket.send(text);
  }

  webSocketMessage() {}

  webSocketClose(socket, code, reason) {
    try {
      socket.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // Already closed.
    }
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const hub = env.BARE_HUB.getByName(url.searchParams.get("hub") ?? "bench");
    if (url.pathname === "/health") return new Response("ok");
    if (url.pathname === "/ws") return hub.fetch(request);
    if (url.pathname === "/publish" && request.method === "POST") {
      await hub.broadcast(await request.text());
      return new Response(null, { status: 204 });
    }
    return new Response("not found", { status: 404 });
  },
};
