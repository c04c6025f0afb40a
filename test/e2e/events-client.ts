import WebSocket from "ws";

/** A `ws` client for the event stream that records every frame, for the e2e tests and the benchmark. */

export interface StreamEvent {
  event_id: string;
  event_type: string;
  seq: number;
  data: Record<string, unknown>;
}

export interface RecordingClient {
  ws: WebSocket;
  frames: { type: string; [key: string]: any }[];
  events: StreamEvent[];
  /** Receive time (performance.now()) of each event, by seq. */
  receivedAtMs: Map<number, number>;
  opened: Promise<void>;
  closed: Promise<{ code: number; reason: string }>;
  waitForEvents(count: number, timeoutMs?: number): Promise<StreamEvent[]>;
}

/**
 * `ackEvery`: acknowledge with `{"type":"ping","last_seq":N}` after this many events, as the SDK does;
 * a client that never acknowledges is a slow consumer once 4 MiB are outstanding.
 */
export function connectEvents(
  url: string,
  headers: Record<string, string> = {},
  options: { ackEvery?: number } = {},
): RecordingClient {
  const ackEvery = options.ackEvery ?? 20;
  const ws = new WebSocket(url, { headers, perMessageDeflate: false });
  const frames: RecordingClient["frames"] = [];
  const events: StreamEvent[] = [];
  const receivedAtMs = new Map<number, number>();
  const waiters: (() => void)[] = [];
  ws.on("message", (data) => {
    const frame = JSON.parse(data.toString());
    frames.push(frame);
    if (frame.type === "event") {
      events.push(frame.event);
      receivedAtMs.set(frame.event.seq, performance.now());
      if (events.length % ackEvery === 0) ws.send(JSON.stringify({ type: "ping", last_seq: frame.event.seq }));
    }
    for (const wake of waiters.splice(0)) wake();
  });
  const opened = new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
    ws.once("unexpected-response", (_request, response) =>
      reject(new Error(`upgrade answered ${response.statusCode}`)),
    );
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  return {
    ws,
    frames,
    events,
    receivedAtMs,
    opened,
    closed,
    async waitForEvents(count, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (events.length < count) {
        if (Date.now() > deadline) throw new Error(`got ${events.length} of ${count} events`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 100);
        });
      }
      return events;
    },
  };
}

/** Publishes through the debug route (ENABLE_DEBUG_ROUTES): `count` copies of one event, in order. */
export async function publishViaDebug(
  baseUrl: string,
  workspaceId: string,
  count: number,
  event: { event_type?: string; data?: Record<string, unknown>; task_id?: string } = {},
): Promise<{ event_id: string; seq: number }[]> {
  const response = await fetch(`${baseUrl}/__debug/events/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      workspace_id: workspaceId,
      count,
      event_type: event.event_type ?? "agent.message",
      task_id: event.task_id ?? "task_e2e",
      data: event.data ?? { task_id: "task_e2e", agent_id: "agent_1", role: "assistant", message: "hello", tokens: 1 },
    }),
  });
  if (response.status !== 200) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
  return ((await response.json()) as { published: { event_id: string; seq: number }[] }).published;
}

export function wsUrl(baseUrl: string, query: Record<string, string> = {}): string {
  const url = new URL("/api/v1/events/ws", baseUrl.replace(/^http/, "ws"));
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  return url.toString();
}
