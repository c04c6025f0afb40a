import { env } from "cloudflare:workers";
import type { PublishedEvent } from "../../../src/events/catalog.ts";
import { CONNECT_HEADER, encodeConnect, type HubConnectRequest } from "../../../src/events/hub.ts";
import { publish } from "../../../src/events/publish.ts";

/** Helpers for the workerd event tests: a WebSocket client on the hub, and a publisher. */

export type Frame = { type: string; [key: string]: any };

export interface TestSocket {
  socket: WebSocket;
  frames: Frame[];
  events(): PublishedEvent[];
  closed: Promise<{ code: number; reason: string }>;
  waitFor(predicate: (frames: Frame[]) => boolean, timeoutMs?: number): Promise<void>;
  waitForEvents(count: number, timeoutMs?: number): Promise<PublishedEvent[]>;
  send(frame: unknown): void;
}

export function watch(socket: WebSocket): TestSocket {
  const frames: Frame[] = [];
  let resolveClosed: (value: { code: number; reason: string }) => void = () => {};
  const closed = new Promise<{ code: number; reason: string }>((resolve) => (resolveClosed = resolve));
  socket.accept();
  socket.addEventListener("message", (message) => {
    frames.push(JSON.parse(message.data as string));
  });
  socket.addEventListener("close", (event) => resolveClosed({ code: event.code, reason: event.reason }));
  const events = () => frames.filter((frame) => frame.type === "event").map((frame) => frame.event as PublishedEvent);
  const waitFor = async (predicate: (frames: Frame[]) => boolean, timeoutMs = 5_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(frames)) {
      if (Date.now() > deadline) throw new Error(`timed out; frames so far: ${JSON.stringify(frames).slice(0, 500)}`);
      await new Promise((wake) => setTimeout(wake, 5));
    }
  };
  return {
    socket,
    frames,
    events,
    closed,
    waitFor,
    async waitForEvents(count, timeoutMs) {
      await waitFor(() => events().length >= count, timeoutMs);
      return events();
    },
    send: (frame) => socket.send(JSON.stringify(frame)),
  };
}

/** Connects straight to a workspace's hub, as the route does after authentication. */
export async function connectHub(workspaceId: string, options: Partial<HubConnectRequest> = {}): Promise<TestSocket> {
  const connect: HubConnectRequest = {
    types: [],
    channels: [],
    version: null,
    lastEventId: null,
    holder: "test",
    ticketSecret: null,
    ...options,
  };
  const response = await env.EVENT_HUB.getByName(workspaceId).fetch("https://event-hub/connect", {
    headers: { Upgrade: "websocket", [CONNECT_HEADER]: encodeConnect(connect) },
  });
  if (response.status !== 101 || !response.webSocket) throw new Error(`upgrade answered ${response.status}`);
  return watch(response.webSocket);
}

let counter = 0;

/** A valid agent.message (or another type's data) published through the one publish path. */
export function publishMessage(
  workspaceId: string,
  overrides: { task_id?: string; message?: string } = {},
): Promise<PublishedEvent> {
  const taskId = overrides.task_id ?? "task_1";
  counter += 1;
  return publish(env, {
    event_type: "agent.message",
    workspace_id: workspaceId,
    task_id: taskId,
    agent_id: "agent_1",
    data: {
      task_id: taskId,
      agent_id: "agent_1",
      role: "assistant",
      message: overrides.message ?? `message ${counter}`,
      tokens: 3,
    },
  });
}

export function publishToolCall(workspaceId: string, taskId: string): Promise<PublishedEvent> {
  return publish(env, {
    event_type: "tool.call",
    workspace_id: workspaceId,
    task_id: taskId,
    data: { tool_id: "call_1", tool_name: "read_file", arguments: { path: "a.ts" }, task_id: taskId, agent_id: "a" },
  });
}

/** The workspace's stored events, oldest first (up to 100). */
export async function hubHistory(workspace: string): Promise<PublishedEvent[]> {
  const page = await env.EVENT_HUB.getByName(workspace).history({ limit: 100, types: [], channels: [], version: null });
  if (!page.ok) throw new Error(page.reason);
  return page.events.map((json) => JSON.parse(json) as PublishedEvent);
}

/** The input of an agent.message numbered `step` (its task `task_<step>`, its text `step <step>`). */
export function stepMessage(workspaceId: string, step: number) {
  return {
    event_type: "agent.message" as const,
    workspace_id: workspaceId,
    task_id: `task_${step}`,
    data: {
      task_id: `task_${step}`,
      agent_id: "agent_1",
      role: "assistant" as const,
      message: `step ${step}`,
      tokens: 1,
    },
  };
}

export function uniqueWorkspace(label: string): string {
  return `ws_${label}_${crypto.randomUUID().slice(0, 8)}`;
}
